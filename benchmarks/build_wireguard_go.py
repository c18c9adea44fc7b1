"""Build wireguard-go from source trees on a machine without the internet.

`make bench WIREGUARD_GO_NEWEST=PATH` compares wgpy with a second wireguard-go, the newest,
which Debian does not ship. With the internet, `make` in a checkout of wireguard-go builds it.
Offline, Go cannot download the modules its go.mod requires; this script builds from trees
you bring (git checkouts or archives of the exact tags go.mod names):

    .venv/bin/python benchmarks/build_wireguard_go.py --go /path/to/go/bin/go \\
        --output /path/to/wireguard-go  WIREGUARD_GO_TREE  CRYPTO_TREE NET_TREE SYS_TREE

Each module tree is checked against the wireguard-go tree's go.sum (Go's h1: hash of the
module's files) before it is used, so a tree at the wrong version is refused. The build runs
on a copy of the wireguard-go tree with a `replace` directive per module tree, with
GOPROXY=off and GOTOOLCHAIN=local: nothing is downloaded. Modules go.mod requires but that no
tree is given for (gvisor, used only by tun/netstack; wintun, Windows only) are replaced by
empty stubs: the Linux binary compiles none of their code, and the build fails if it would.
The binary's `--version` is checked last. benchmarks/README.md has the whole procedure.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Directories Go leaves out of a module zip (and so out of its h1: hash).
VCS_DIRS = frozenset({".git", ".hg", ".svn", ".bzr"})


class BuildError(Exception):
    """The build cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class GoMod:
    module: str
    go: tuple[int, ...]  # the `go` line: the oldest Go that may build it
    requires: dict[str, str]  # module path -> version


def parse_version(text: str) -> tuple[int, ...]:
    """'1.23.1' -> (1, 23, 1); 'go1.27.3' and 'go1.22rc1' (-> (1, 22)) as well."""
    match = re.match(r"(?:go)?(\d+(?:\.\d+)*)", text.strip())
    if not match:
        raise BuildError(f"{text!r} is not a Go version such as 1.23.1.")
    return tuple(int(part) for part in match.group(1).split("."))


def parse_go_mod(text: str) -> GoMod:
    """The module path, the `go` line and the requirements (both block and one-line forms)."""
    module = ""
    go: tuple[int, ...] = (1, 0)
    requires: dict[str, str] = {}
    in_block = False
    for raw in text.splitlines():
        line = raw.split("//", 1)[0].strip()
        if not line:
            continue
        if in_block:
            if line == ")":
                in_block = False
            else:
                path, version = line.split()[:2]
                requires[path] = version
        elif line == "require (":
            in_block = True
        elif line.startswith("require "):
            path, version = line.split()[1:3]
            requires[path] = version
        elif line.startswith("module "):
            module = line.split()[1].strip('"')
        elif line.startswith("go "):
            go = parse_version(line.split()[1])
    if not module:
        raise BuildError("The go.mod has no module line: is this a Go module's go.mod?")
    return GoMod(module, go, requires)


def go_sum_hashes(text: str) -> dict[tuple[str, str], str]:
    """(module, version) -> h1: hash of the module's files, from go.sum (go.mod lines left out)."""
    hashes = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 3 and not fields[1].endswith("/go.mod"):
            hashes[(fields[0], fields[1])] = fields[2]
    return hashes


def module_files(root: Path) -> list[str]:
    """The files of the module rooted at ``root`` as Go zips them: regular files only, without
    version-control directories, vendor directories and nested modules (their own go.mod)."""
    files = []
    for directory, dirs, names in os.walk(root):
        here = Path(directory)
        if here != root and (here / "go.mod").exists():
            dirs[:] = []
            continue
        dirs[:] = [d for d in dirs if d not in VCS_DIRS and d != "vendor"]
        for name in names:
            path = here / name
            if path.is_symlink() or not path.is_file():
                continue
            files.append(path.relative_to(root).as_posix())
    return sorted(files)


def module_hash(root: Path, module: str, version: str) -> str:
    """Go's h1: hash (golang.org/x/mod/sumdb/dirhash Hash1) of the module tree at ``root``:
    SHA-256 over the lines 'sha256-hex  module@version/file', sorted, base64."""
    prefix = f"{module}@{version}/"
    lines = []
    for name in sorted(prefix + f for f in module_files(root)):
        digest = hashlib.sha256((root / name[len(prefix) :]).read_bytes()).hexdigest()
        lines.append(f"{digest}  {name}\n")
    summary = hashlib.sha256("".join(lines).encode()).digest()
    return "h1:" + base64.b64encode(summary).decode()


def check_tree(tree: Path, main: GoMod, sums: dict[tuple[str, str], str]) -> tuple[str, str]:
    """The (module, version) that ``tree`` is, checked against go.mod and go.sum."""
    go_mod = tree / "go.mod"
    if not go_mod.is_file():
        raise BuildError(f"{tree} has no go.mod: give the root of a Go module's source tree.")
    module = parse_go_mod(go_mod.read_text()).module
    version = main.requires.get(module)
    if version is None:
        raise BuildError(
            f"{tree} is the module {module}, which {main.module} does not require: "
            "give only trees of the modules its go.mod names."
        )
    expected = sums.get((module, version))
    if expected is None:
        raise BuildError(f"go.sum has no hash for {module} {version}: is the go.sum complete?")
    actual = module_hash(tree, module, version)
    if actual != expected:
        raise BuildError(
            f"{tree} is not {module} {version} as go.sum pins it ({actual}, expected "
            f"{expected}): check out the tag {version} of that repository."
        )
    return module, version


def require_go(main: GoMod, have: tuple[int, ...], go: str) -> None:
    """Refuse a Go older than the `go` line of ``main``'s go.mod."""
    if have < main.go:
        raise BuildError(
            f"{main.module} needs Go {'.'.join(map(str, main.go))} or newer and {go} is "
            f"{'.'.join(map(str, have))}: pass a newer one with --go."
        )


def go_version(go: str) -> tuple[int, ...]:
    try:
        out = subprocess.run(
            [go, "env", "GOVERSION"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BuildError(f"{go} does not run as a Go toolchain ({exc}): pass --go PATH.") from exc
    return parse_version(out)


def build(go: str, source: Path, trees: list[Path], output: Path) -> str:
    """Build wireguard-go from ``source`` with ``trees`` as its modules; returns --version's
    first line."""
    main = parse_go_mod((source / "go.mod").read_text())
    sums = go_sum_hashes((source / "go.sum").read_text())
    require_go(main, go_version(go), go)
    given = {}
    for tree in trees:
        module, version = check_tree(tree.resolve(), main, sums)
        given[module] = tree.resolve()
        print(f"{module} {version}: {tree} matches go.sum", flush=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".wireguard-go-build-", dir=output.parent) as tmp:
        work = Path(tmp) / "src"
        shutil.copytree(source, work, ignore=shutil.ignore_patterns(".git"))
        replaces = []
        for module in main.requires:
            target = given.get(module)
            if target is None:
                target = Path(tmp) / "stub" / module
                target.mkdir(parents=True)
                (target / "go.mod").write_text(f"module {module}\n")
                print(f"{module}: no tree given, replaced by an empty stub", flush=True)
            replaces.append(f"-replace={module}={target}")
        env = dict(
            os.environ,
            GOTOOLCHAIN="local",
            GOPROXY="off",
            GOSUMDB="off",
            GOFLAGS="-mod=mod",
            GOTELEMETRY="off",
        )
        subprocess.run([go, "mod", "edit", *replaces], cwd=work, env=env, check=True)
        built = Path(tmp) / "wireguard-go"
        result = subprocess.run(
            [go, "build", "-trimpath", "-o", str(built), "."], cwd=work, env=env
        )
        if result.returncode != 0:
            raise BuildError(
                "go build failed (its errors are above); a package from a stubbed module "
                "needs that module's tree as an argument."
            )
        shutil.move(built, output)
    version = subprocess.run(
        [str(output), "--version"], capture_output=True, text=True, check=True
    ).stdout
    return version.splitlines()[0] if version else ""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="the wireguard-go tree (e.g. tag 0.0.20250522)")
    parser.add_argument(
        "modules", type=Path, nargs="*", help="trees of the modules go.mod requires"
    )
    parser.add_argument("--go", default="go", help="the go command (default: go on PATH)")
    parser.add_argument("--output", type=Path, required=True, help="where the binary goes")
    args = parser.parse_args(argv)
    try:
        if not (args.source / "go.mod").is_file():
            raise BuildError(f"{args.source} has no go.mod: give the wireguard-go source tree.")
        line = build(args.go, args.source, args.modules, args.output.resolve())
    except BuildError as exc:
        print(f"build_wireguard_go: {exc}", file=sys.stderr)
        return 1
    print(f"{args.output}: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
