#!/usr/bin/env python3
"""Checks that every published crate's `rust-version` is true.

Other toolchains cannot be installed on every CI host, so instead of building
with the declared minimum, this reads `cargo metadata` and checks that no
crate a published crate depends on, at the version Cargo.lock pins, declares
a higher `rust-version` than the published crate itself.

    ci/msrv-check.py               # run `cargo metadata` and check
    ci/msrv-check.py --metadata F  # check a saved `cargo metadata` JSON (- = stdin)
    ci/msrv-check.py --self-test   # test the version order and the graph walk

What is checked:
  - published crates: the workspace members whose `publish` is not false
    (cargo metadata: `publish` is null or a non-empty list of registries);
  - their dependency tree in the resolve graph, following edges of kind
    normal (`kind` null) and build. Build dependencies and build scripts are
    compiled by the same toolchain as the crate, so they bind the minimum
    too. Dev dependencies are not followed: an embedder never builds them;
  - at the locked versions: `cargo metadata --locked` fails rather than
    resolve anew if Cargo.lock is missing or out of date;
  - for the platforms anypoll supports (TARGETS below: Linux and those of
    ci/cross-check.sh), through `--filter-platform`. A dependency that only
    exists on another platform (Windows) does not count.

Where it over-approximates (it may fail a crate that is fine): cargo
metadata resolves features once for the whole workspace, dev dependencies
included, so an optional dependency switched on only by a dev dependency's
features counts as normal. An edge with both a platform-specific normal
kind and a dev kind is counted as normal (cargo metadata does not say which
cfg matched); it is named in a note.

What it cannot see (it may pass a crate that is not fine): a dependency
that declares no rust-version; what the crate's own code needs; and the
versions an embedder's own resolve picks, which are the newest compatible
ones rather than this Cargo.lock's unless their Cargo uses the
rust-version-aware resolver (Cargo 1.84 with
`resolver.incompatible-rust-versions = "fallback"`; the default of
resolver 3, Cargo 1.85).

Output: one line per published crate,
    NAME: rust-version X, highest in its normal tree Y (crate Z V)
then, if the check fails, every crate above X with the path that pulls it
in, and the minimal true rust-version: the highest one in the tree (the
crate's own code may need more; that cannot be seen from metadata).

Exit status: 0 when every published crate passes, 1 when one does not (or
declares no rust-version, or a rust-version is malformed), 2 when cargo
metadata cannot be run or read.

Standard library only; python 3.6 or later.
"""

import argparse
import json
import os
import subprocess
import sys
from collections import deque

# The platforms whose dependencies count: Linux plus ci/cross-check.sh's list.
TARGETS = (
    "x86_64-unknown-linux-gnu",
    "aarch64-unknown-linux-gnu",
    "x86_64-unknown-freebsd",
    "x86_64-unknown-netbsd",
    "x86_64-unknown-openbsd",
    "x86_64-unknown-dragonfly",
    "x86_64-apple-darwin",
    "aarch64-apple-darwin",
    "x86_64-unknown-illumos",
)

# The dependency kinds that the published crate's users compile.
FOLLOWED_KINDS = (None, "build")


class MetadataError(Exception):
    """The cargo metadata document cannot be checked."""


def parse_version(text):
    """Parses a rust-version, "MAJOR[.MINOR[.PATCH]]", into a 3-tuple of ints.

    Numeric, so that 1.9 < 1.10 < 1.85 and 1.85 == 1.85.0. Raises ValueError
    for anything else (pre-release tags, empty parts, signs, four parts).
    """
    if not isinstance(text, str):
        raise ValueError("rust-version {!r} is not a string".format(text))
    parts = text.split(".")
    if len(parts) > 3 or not all(p and all(c in "0123456789" for c in p) for p in parts):
        raise ValueError("rust-version {!r} is not MAJOR[.MINOR[.PATCH]]".format(text))
    nums = [int(p) for p in parts]
    return tuple(nums + [0] * (3 - len(nums)))


def is_published(pkg):
    """`publish = false` shows as [] in cargo metadata; null means anywhere."""
    publish = pkg.get("publish")
    return publish is None or len(publish) > 0


def followed_deps(node, notes, names):
    """The ids of the node's dependencies reached through a followed kind."""
    out = []
    for dep in node.get("deps", []):
        # Cargo before 1.41 has no dep_kinds: count the edge as normal.
        kinds = dep.get("dep_kinds") or [{"kind": None, "target": None}]
        followed = [k for k in kinds if k.get("kind") in FOLLOWED_KINDS]
        if not followed:
            continue
        others = [k for k in kinds if k.get("kind") not in FOLLOWED_KINDS]
        if others and all(k.get("target") for k in followed):
            notes.append(
                "note: {} -> {} is counted as normal; it is also a {} dependency, "
                "and its normal kind only applies on {}".format(
                    names[node["id"]],
                    names[dep["pkg"]],
                    "/".join(sorted({str(k.get("kind")) for k in others})),
                    ", ".join(k["target"] for k in followed),
                )
            )
        out.append(dep["pkg"])
    return sorted(out)


def walk(root, nodes, notes, names):
    """Breadth-first over the followed edges: {id: parent id} of the tree."""
    parent = {root: None}
    queue = deque([root])
    while queue:
        cur = queue.popleft()
        node = nodes.get(cur)
        if node is None:
            continue
        for dep in followed_deps(node, notes, names):
            if dep not in parent:
                parent[dep] = cur
                queue.append(dep)
    return parent


def path_to(pkg_id, parent, names):
    hops = []
    while pkg_id is not None:
        hops.append(names[pkg_id])
        pkg_id = parent[pkg_id]
    return " -> ".join(reversed(hops))


def declared_versions(root, tree, errors):
    """[(version, package)] of the tree's crates that declare a rust-version,
    highest first, by name and version among equals."""
    declared = []
    for pkg in tree:
        if pkg.get("rust_version") is None:
            continue
        try:
            declared.append((parse_version(pkg["rust_version"]), pkg))
        except ValueError as err:
            errors.append("{}: {} {}: {}".format(root["name"], pkg["name"], pkg["version"], err))
    declared.sort(key=lambda vp: (vp[1]["name"], vp[1]["version"]))
    declared.sort(key=lambda vp: vp[0], reverse=True)  # stable: keeps the name order
    return declared


def check_crate(root, packages, nodes, names):
    """Checks one published crate: (report lines, ok)."""
    name = root["name"]
    notes, lines = [], []
    parent = walk(root["id"], nodes, notes, names)
    tree = [packages[i] for i in parent if i != root["id"] and i in packages]
    declared = declared_versions(root, tree, lines)
    ok = not lines
    if declared:
        top_v, top = declared[0]
        highest = "{} (crate {} {})".format(top["rust_version"], top["name"], top["version"])
    else:
        top_v, top, highest = None, None, "none declared"

    own = root.get("rust_version")
    try:
        own_v = None if own is None else parse_version(own)
    except ValueError as err:
        return lines + ["{}: {}".format(name, err)], False
    if own_v is None:
        lines.append("{}: no rust-version, highest in its normal tree {}".format(name, highest))
        lines.append("{}: FAIL: a published crate must declare its rust-version".format(name))
        ok = False
    else:
        lines.append("{}: rust-version {}, highest in its normal tree {}".format(name, own, highest))
        above = [pkg for v, pkg in declared if v > own_v]
        if above:
            ok = False
            one = len(above) == 1
            lines.append(
                "{}: FAIL: {} crate{} in its normal tree declare{} a rust-version above {}:".format(
                    name, len(above), "" if one else "s", "s" if one else "", own
                )
            )
            for pkg in above:
                via = path_to(pkg["id"], parent, names)
                lines.append(
                    "    {} {}: rust-version {} (via {})".format(
                        pkg["name"], pkg["version"], pkg["rust_version"], via
                    )
                )
    if top is not None and (own_v is None or top_v > own_v):
        lines.append(
            "{}: minimal true rust-version: {} (the highest in its normal tree)".format(
                name, top["rust_version"]
            )
        )
    elif ok:
        lines.append("{}: ok".format(name))
    return lines + sorted(set(notes)), ok


def check(meta):
    """Checks a parsed `cargo metadata` document: (report lines, ok)."""
    packages = {p["id"]: p for p in meta.get("packages", [])}
    resolve = meta.get("resolve")
    if not resolve:
        raise MetadataError("cargo metadata has no resolve graph (was --no-deps used?)")
    nodes = {n["id"]: n for n in resolve.get("nodes", [])}
    names = {i: p["name"] for i, p in packages.items()}
    members = [packages[i] for i in meta.get("workspace_members", []) if i in packages]
    published = sorted((p for p in members if is_published(p)), key=lambda p: p["name"])
    if not published:
        return ["no published crate in the workspace: nothing to check"], True
    lines, ok = [], True
    for root in published:
        crate_lines, crate_ok = check_crate(root, packages, nodes, names)
        lines += crate_lines
        ok = ok and crate_ok
    return lines, ok


def run_metadata(root):
    cargo = os.environ.get("CARGO", "cargo")
    cmd = [cargo, "metadata", "--format-version", "1", "--locked"]
    for target in TARGETS:
        cmd += ["--filter-platform", target]
    try:
        proc = subprocess.run(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as err:
        raise RuntimeError("cannot run {}: {}".format(cargo, err))
    if proc.returncode != 0:
        raise RuntimeError(
            "`{}` in {} failed (exit {}):\n{}".format(
                " ".join(cmd), root, proc.returncode, proc.stderr.decode(errors="replace").rstrip()
            )
        )
    return proc.stdout.decode(errors="replace")


def self_test():
    failures = []
    count = 0

    def expect(what, got, want):
        nonlocal count
        count += 1
        if got != want:
            failures.append("{}: got {!r}, want {!r}".format(what, got, want))

    order = [("1.85", "1.9", True), ("1.9", "1.10", False), ("1.10", "1.9", True),
             ("1.85.1", "1.85", True), ("1.85", "1.85.0", False), ("2", "1.99.99", True),
             ("1.6", "1.60", False), ("1.82", "1.85", False)]
    for a, b, want in order:
        expect("{} > {}".format(a, b), parse_version(a) > parse_version(b), want)
    expect("1.85 == 1.85.0", parse_version("1.85") == parse_version("1.85.0"), True)
    expect("parse 1.82", parse_version("1.82"), (1, 82, 0))
    bad_versions = ["", "1.", ".1", "1..2", "1.2.3.4", "1.85-beta", "v1.85", "+1.85", " 1.85",
                    "1.8\u0665", None]
    for bad in bad_versions:
        try:
            parse_version(bad)
            rejected = False
        except ValueError:
            rejected = True
        expect("reject {!r}".format(bad), rejected, True)

    # A workspace: "pub" (published) -> normal "a" (1.9) -> normal "deep"
    # (1.90), build "b" (1.88), dev "dev" (1.99, not followed), normal on
    # cfg(windows) and dev "amb" (counted, with a note); "private" is
    # publish = false with a high dependency; "bare" declares none.
    def pkg(name, rv, publish):
        return {"id": name, "name": name, "version": "1.0.0", "rust_version": rv,
                "publish": publish}

    def dep(to, *kinds):
        return {"pkg": to, "dep_kinds": [{"kind": k, "target": t} for k, t in kinds]}

    meta = {
        "packages": [pkg("pub", "1.85", None), pkg("a", "1.9", None), pkg("deep", "1.90", None),
                     pkg("b", "1.88", None), pkg("dev", "1.99", None), pkg("amb", "1.0", None),
                     pkg("private", None, []), pkg("bare", None, ["crates-io"])],
        "workspace_members": ["pub", "private", "bare"],
        "resolve": {"nodes": [
            {"id": "pub", "deps": [dep("a", (None, None)), dep("b", ("build", None)),
                                   dep("dev", ("dev", None)),
                                   dep("amb", (None, "cfg(windows)"), ("dev", None))]},
            {"id": "a", "deps": [dep("deep", (None, None))]},
            {"id": "private", "deps": [dep("dev", (None, None))]},
            {"id": "bare", "deps": []},
        ]},
    }

    def has(what, line, want=True):
        expect(what, line in lines, want)

    lines, ok = check(meta)
    text = "\n".join(lines)
    expect("graph: fails", ok, False)
    has("graph: highest", "pub: rust-version 1.85, highest in its normal tree 1.90 (crate deep 1.0.0)")
    has("graph: transitive path", "    deep 1.0.0: rust-version 1.90 (via pub -> a -> deep)")
    has("graph: build dep followed", "    b 1.0.0: rust-version 1.88 (via pub -> b)")
    has("graph: minimal true", "pub: minimal true rust-version: 1.90 (the highest in its normal tree)")
    has("graph: no rust-version fails", "bare: FAIL: a published crate must declare its rust-version")
    expect("graph: 1.9 not above 1.85", "a 1.0.0" in text, False)
    expect("graph: dev dep not followed", "dev 1.0.0" in text, False)
    expect("graph: publish = false skipped", "private" in text, False)
    expect("graph: ambiguous edge noted", "note: pub -> amb is counted as normal" in text, True)

    meta["packages"][2]["rust_version"] = "1.85.0"
    meta["packages"][3]["rust_version"] = "1.7"
    meta["packages"][7]["rust_version"] = "1.70"
    lines, ok = check(meta)
    expect("graph: passes at equal versions", ok, True)
    has("graph: pub ok", "pub: ok")
    has("graph: bare ok", "bare: ok")

    meta["packages"][1]["rust_version"] = "1.85-nightly"
    lines, ok = check(meta)
    expect("graph: malformed version fails", ok, False)
    has("graph: malformed version named",
        "pub: a 1.0.0: rust-version '1.85-nightly' is not MAJOR[.MINOR[.PATCH]]")

    for failure in failures:
        print("self-test FAILED: " + failure)
    if failures:
        print("self-test: {} of {} checks failed".format(len(failures), count))
        return 1
    print("self-test: {} checks passed".format(count))
    return 0


def main():
    ap = argparse.ArgumentParser(
        description="Check that every published crate's rust-version is true."
    )
    ap.add_argument("--self-test", action="store_true",
                    help="test the version order and the graph walk")
    ap.add_argument("--metadata", metavar="FILE",
                    help="read `cargo metadata --format-version 1` JSON from FILE (- = stdin)")
    args = ap.parse_args()
    if args.self_test:
        return self_test()

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        if args.metadata == "-":
            raw = sys.stdin.read()
        elif args.metadata:
            with open(args.metadata, encoding="utf-8") as f:
                raw = f.read()
        else:
            raw = run_metadata(root)
        meta = json.loads(raw)
    except (OSError, RuntimeError, ValueError) as err:
        print("msrv-check: {}".format(err), file=sys.stderr)
        return 2
    try:
        lines, ok = check(meta)
    except MetadataError as err:
        print("msrv-check: {}".format(err), file=sys.stderr)
        return 2
    except (KeyError, TypeError, AttributeError) as err:
        print("msrv-check: unexpected cargo metadata layout: {!r}".format(err), file=sys.stderr)
        return 2
    for line in lines:
        print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
