//! One name for the kqueue platforms: `cfg(anypoll_kqueue)`, so that the
//! list of operating systems lives here once instead of in every file that
//! gates code on kqueue.

/// The systems whose kqueue the kqueue backend supports.
const KQUEUE: &[&str] = &["macos", "ios", "freebsd", "netbsd", "openbsd", "dragonfly"];

fn main() {
    println!("cargo::rustc-check-cfg=cfg(anypoll_kqueue)");
    println!("cargo::rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if KQUEUE.contains(&os.as_str()) {
        println!("cargo::rustc-cfg=anypoll_kqueue");
    }
}
