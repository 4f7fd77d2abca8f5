//! The namespaces themselves: entering them (the helper), mapping ids into them (the proxy,
//! which is still in the parent user namespace), bringing `lo` up (the helper, over
//! rtnetlink: no `ip` binary is needed) and pointing `/etc/resolv.conf` at the namespace's
//! DNS responder (in a mount namespace of the command's own).

use std::io;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

/// Enters a new user, network and mount namespace. The process must still be
/// single-threaded (the kernel refuses a new user namespace otherwise).
pub fn enter() -> Result<(), String> {
    let flags = CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS;
    unshare(flags).map_err(|errno| {
        format!(
            "cannot create a user and network namespace: {} (unprivileged user namespaces may be \
             disabled: kernel.unprivileged_userns_clone, user.max_user_namespaces, or an \
             AppArmor or seccomp policy)",
            io::Error::from(errno)
        )
    })
}

const RESOLV_CONF: &str = "/etc/resolv.conf";
/// Where a scratch tmpfs is mounted for a moment, inside our mount namespace only.
const SCRATCH: &str = "/tmp";

/// Shows the command a `/etc/resolv.conf` naming 127.0.0.1, the namespace's DNS responder,
/// so a resolver on the LAN (unreachable here) does not fail silently. The file lives on a
/// tmpfs mounted over [`SCRATCH`] only until it is bind-mounted: the real `/tmp` is never
/// written, and nothing outlives the namespace. Without a `/etc/resolv.conf`, nothing to do.
pub fn point_resolver_here() -> Result<(), String> {
    if std::fs::metadata(RESOLV_CONF).is_err() {
        return Ok(());
    }
    let failed = |what: &str, e: nix::Error| {
        format!(
            "cannot point {RESOLV_CONF} at the namespace's DNS responder ({what}: {})",
            io::Error::from(e)
        )
    };
    let none: Option<&str> = None;
    // Nothing mounted here propagates back to the host's mount namespace.
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .map_err(|e| failed("private mounts", e))?;
    mount(
        Some("tmpfs"),
        SCRATCH,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("size=16k,mode=0755"),
    )
    .map_err(|e| failed("scratch tmpfs", e))?;
    let file = format!("{SCRATCH}/resolv.conf");
    let written = std::fs::write(&file, "nameserver 127.0.0.1\n")
        .map_err(|e| format!("cannot point {RESOLV_CONF} at the namespace's DNS responder: {e}"))
        .and_then(|()| {
            mount(
                Some(file.as_str()),
                RESOLV_CONF,
                none,
                MsFlags::MS_BIND,
                none,
            )
            .map_err(|e| failed("bind mount", e))
        });
    let detached = umount2(SCRATCH, MntFlags::MNT_DETACH).map_err(|e| failed("scratch tmpfs", e));
    written.and(detached)
}

/// Writes the uid and gid maps of `pid`'s new user namespace. Unprivileged, the caller's own
/// ids are all it may map (and `setgroups` must be denied first); as root every id of this
/// namespace is mapped to itself, so files keep their owners and root its access to them.
pub fn write_maps(pid: u32) -> Result<(), String> {
    let euid = nix::unistd::geteuid();
    let proc = format!("/proc/{pid}");
    let write = |file: &str, text: &str| {
        std::fs::write(format!("{proc}/{file}"), text)
            .map_err(|e| format!("cannot write the namespace's {file}: {e}"))
    };
    if euid.is_root() {
        write("uid_map", &identity(&read_own("uid_map")?))?;
        write("gid_map", &identity(&read_own("gid_map")?))
    } else {
        let gid = nix::unistd::getegid();
        write("uid_map", &format!("{euid} {euid} 1\n"))?;
        write("setgroups", "deny")?;
        write("gid_map", &format!("{gid} {gid} 1\n"))
    }
}

fn read_own(file: &str) -> Result<String, String> {
    std::fs::read_to_string(format!("/proc/self/{file}"))
        .map_err(|e| format!("cannot read /proc/self/{file}: {e}"))
}

/// Every range of ids valid in our namespace (the first column of our own map), mapped to
/// itself.
fn identity(own: &str) -> String {
    own.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let inside = fields.next()?;
            let _outside = fields.next()?;
            let count = fields.next()?;
            Some(format!("{inside} {inside} {count}\n"))
        })
        .collect()
}

/// `lo`'s index: the loopback device is the first one every network namespace registers.
const LOOPBACK_INDEX: i32 = 1;
const RTM_NEWLINK: u16 = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const IFF_UP: u32 = 1;

/// `RTM_NEWLINK` for `lo` with `IFF_UP` set: a `nlmsghdr` and an `ifinfomsg`, in host
/// byte order.
fn link_up_request() -> [u8; 32] {
    let mut msg = [0u8; 32];
    msg[0..4].copy_from_slice(&32u32.to_ne_bytes());
    msg[4..6].copy_from_slice(&RTM_NEWLINK.to_ne_bytes());
    msg[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    msg[8..12].copy_from_slice(&1u32.to_ne_bytes());
    // ifinfomsg: family AF_UNSPEC, pad, type 0, then index, flags, change.
    msg[20..24].copy_from_slice(&LOOPBACK_INDEX.to_ne_bytes());
    msg[24..28].copy_from_slice(&IFF_UP.to_ne_bytes());
    msg[28..32].copy_from_slice(&IFF_UP.to_ne_bytes());
    msg
}

/// The kernel's answer to a request with `NLM_F_ACK`: an `NLMSG_ERROR` whose error is 0 on
/// success, a negated errno otherwise.
fn ack_result(answer: &[u8]) -> io::Result<()> {
    let field = |range: std::ops::Range<usize>| answer.get(range).map(|b| b.to_vec());
    let kind = field(4..6).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let error = field(16..20).map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    match (kind, error) {
        (Some(NLMSG_ERROR), Some(0)) => Ok(()),
        (Some(NLMSG_ERROR), Some(error)) => Err(io::Error::from_raw_os_error(-error)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected rtnetlink answer",
        )),
    }
}

/// Brings `lo` up in the current network namespace.
pub fn loopback_up() -> Result<(), String> {
    let up = || -> io::Result<()> {
        let socket = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            None,
        )?;
        let kernel = SocketAddrNetlink::new(0, 0);
        rustix::net::sendto(&socket, &link_up_request(), SendFlags::empty(), &kernel)?;
        let mut answer = [0u8; 1024];
        let (_, n) = rustix::net::recv(&socket, &mut answer[..], RecvFlags::empty())?;
        ack_result(&answer[..n])
    };
    up().map_err(|e| {
        let hint = match e.raw_os_error() {
            // Ubuntu's default since 24.04: new user namespaces get no capabilities.
            Some(nix::libc::EPERM | nix::libc::EACCES) => {
                " (an AppArmor policy may deny capabilities in new user namespaces: \
                 kernel.apparmor_restrict_unprivileged_userns)"
            }
            _ => "",
        };
        format!("cannot bring up lo in the namespace: {e}{hint}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_maps_every_range_of_our_own_map() {
        assert_eq!(
            identity("         0          0 4294967295\n"),
            "0 0 4294967295\n"
        );
        assert_eq!(
            identity("0 100000 65536\n65536 1000 1\n"),
            "0 0 65536\n65536 65536 1\n"
        );
    }

    #[test]
    fn acks() {
        let mut answer = [0u8; 36];
        answer[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert!(ack_result(&answer).is_ok());
        answer[16..20].copy_from_slice(&(-1i32).to_ne_bytes());
        assert_eq!(ack_result(&answer).unwrap_err().raw_os_error(), Some(1));
        assert!(ack_result(&answer[..10]).is_err());
    }
}
