//! One name for the kqueue platforms, `cfg(anypoll_kqueue)`, and one for
//! the platforms with `ppoll`, `cfg(anypoll_ppoll)`, so that each list of
//! operating systems lives here once instead of in every file that gates
//! code on it.

/// The systems whose kqueue the kqueue backend supports.
const KQUEUE: &[&str] = &["macos", "ios", "freebsd", "netbsd", "openbsd", "dragonfly"];

/// The systems with `ppoll` (the poll backend's nanosecond timeout); not
/// macOS or iOS.
const PPOLL: &[&str] = &["linux", "android", "freebsd", "dragonfly", "netbsd", "openbsd", "illumos", "solaris"];

fn main() {
    println!("cargo::rustc-check-cfg=cfg(anypoll_kqueue)");
    println!("cargo::rustc-check-cfg=cfg(anypoll_ppoll)");
    println!("cargo::rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if KQUEUE.contains(&os.as_str()) {
        println!("cargo::rustc-cfg=anypoll_kqueue");
    }
    if PPOLL.contains(&os.as_str()) {
        println!("cargo::rustc-cfg=anypoll_ppoll");
    }
}
