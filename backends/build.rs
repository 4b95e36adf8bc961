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
    if os == "linux" && std::env::var_os("CARGO_FEATURE_LIBKQUEUE").is_some() {
        link_libkqueue();
    }
}

/// The feature `libkqueue`: `-lkqueue`, where pkg-config says it is. A
/// missing libkqueue fails the build here, with what to do, rather than at
/// link time with an undefined `kevent`.
fn link_libkqueue() {
    println!("cargo::rerun-if-env-changed=PKG_CONFIG_PATH");
    let out = std::process::Command::new("pkg-config").args(["--libs-only-L", "libkqueue"]).output();
    let dirs = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => fail(&format!("pkg-config cannot find libkqueue: {}", String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => fail(&format!("pkg-config cannot run: {e}")),
    };
    for dir in dirs.split_whitespace().filter_map(|d| d.strip_prefix("-L")) {
        println!("cargo::rustc-link-search=native={dir}");
    }
    println!("cargo::rustc-link-lib=kqueue");
}

fn fail(why: &str) -> ! {
    eprintln!(
        "error: the feature `libkqueue` needs an installed libkqueue (lib, include/kqueue, libkqueue.pc): {why}. \
         Install it, or point PKG_CONFIG_PATH at its lib/pkgconfig; libkqueue is not in Debian bookworm."
    );
    std::process::exit(1);
}
