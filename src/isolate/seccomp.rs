//! The command's seccomp filter: sockets only of the families the network namespace
//! contains.
//!
//! A network namespace isolates IPv4, IPv6, netlink and abstract Unix sockets, but not Unix
//! sockets on the file system (a local daemon's socket leads wherever the daemon does) nor
//! vsock (a virtual machine's line to its host). So `socket()` is refused with `EPERM` for
//! every family but `AF_INET`, `AF_INET6` and `AF_NETLINK`, and `AF_UNIX` unless
//! `dangerously_allow_all_unix_sockets`; `socketpair()` stays allowed for ordinary IPC.
//! io_uring is refused too, since `IORING_OP_SOCKET` creates sockets without the `socket`
//! system call; so are x32 system calls (other numbers for the same calls), and a 32-bit
//! system call kills the process (seccompiler's architecture check).

use std::collections::BTreeMap;

use nix::libc;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

/// Where the x32 ABI's system call numbers start on x86_64.
#[cfg(target_arch = "x86_64")]
const X32: i64 = 0x4000_0000;

/// Compiles the filter for this architecture.
pub fn filter(allow_unix_sockets: bool) -> Result<BpfProgram, String> {
    let failed = |e: seccompiler::BackendError| format!("cannot build the seccomp filter: {e}");
    let mut families = vec![libc::AF_INET, libc::AF_INET6, libc::AF_NETLINK];
    if allow_unix_sockets {
        families.push(libc::AF_UNIX);
    }
    let other_family = families
        .iter()
        .map(|&family| {
            SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, family as u64)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(failed)?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    rules.insert(
        libc::SYS_socket,
        vec![SeccompRule::new(other_family).map_err(failed)?],
    );
    // An empty rule list matches every call.
    rules.insert(libc::SYS_io_uring_setup, Vec::new());
    #[cfg(target_arch = "x86_64")]
    {
        rules.insert(X32 | libc::SYS_socket, Vec::new());
        rules.insert(X32 | libc::SYS_io_uring_setup, Vec::new());
    }
    let arch = std::env::consts::ARCH.try_into().map_err(|_| {
        format!(
            "seccomp filters are not supported on {}",
            std::env::consts::ARCH
        )
    })?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(failed)?;
    BpfProgram::try_from(filter).map_err(|e| format!("cannot build the seccomp filter: {e}"))
}

/// Applies `filter` to every thread of this process and, through them, to every process
/// they start. It also sets `no_new_privs`: set-user-id programs do not gain privileges.
pub fn apply(filter: &BpfProgram) -> Result<(), String> {
    seccompiler::apply_filter_all_threads(filter)
        .map_err(|e| format!("cannot apply the seccomp filter: {e}"))
}
