//! The `egress-proxy` binary: a thin shell over the library's CLI.
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(egress_proxy::cli::main());
}
