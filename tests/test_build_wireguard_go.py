"""benchmarks/build_wireguard_go.py without a Go toolchain: go.mod and go.sum parsing, Go's h1:
module hash and the check of a module tree against go.sum (the build itself needs Go and the
source trees: benchmarks/README.md, "The newest wireguard-go, built from source")."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from build_wireguard_go import (
    BuildError,
    check_tree,
    go_sum_hashes,
    main,
    module_files,
    module_hash,
    parse_go_mod,
    parse_version,
    require_go,
)

# wireguard-go 0.0.20250522's go.mod and the first lines of its go.sum.
GO_MOD = """\
module golang.zx2c4.com/wireguard

go 1.23.1

require (
\tgolang.org/x/crypto v0.37.0
\tgolang.org/x/net v0.39.0
\tgolang.org/x/sys v0.32.0
\tgolang.zx2c4.com/wintun v0.0.0-20230126152724-0fa3db229ce2
\tgvisor.dev/gvisor v0.0.0-20250503011706-39ed1f5ac29c
)

require (
\tgithub.com/google/btree v1.1.2 // indirect
\tgolang.org/x/time v0.7.0 // indirect
)
"""
GO_SUM = """\
github.com/google/btree v1.1.2 h1:xf4v41cLI2Z6FxbKm+8Bu+m8ifhj15JuZ9sa0jZCMUU=
github.com/google/btree v1.1.2/go.mod h1:qOPhT0dTNdNzV6Z/lhRX0YXUafgPLFUh+gZMl761Gm4=
golang.org/x/crypto v0.37.0 h1:kJNSjF/Xp7kU0iB2Z+9viTPMW4EqqsrywMXLJOOsXSE=
golang.org/x/crypto v0.37.0/go.mod h1:vg+k43peMZ0pUMhYmVAWysMK35e6ioLh3wB8ZCAfbVc=
"""

# The h1: hash Go itself gave the module below (go1.27.3, `go mod download -json` of its zip
# served from a file:// GOPROXY): a.go, go.mod and sub/b.go.
TREE_H1 = "h1:NrkpuPAq/c3IeNyfXYNTomdq1/fyk/Up6N6OiBkvN7E="


def make_tree(root: Path) -> Path:
    """A module example.com/m with what Go leaves out of its zip beside what it keeps."""
    (root / "sub").mkdir(parents=True)
    (root / "go.mod").write_text("module example.com/m\n\ngo 1.21\n")
    (root / "a.go").write_text("package m\n\nconst A = 1\n")
    (root / "sub" / "b.go").write_text("package sub\n")
    (root / "nested").mkdir()  # a module of its own
    (root / "nested" / "go.mod").write_text("module example.com/m/nested\n")
    (root / "nested" / "c.go").write_text("x\n")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("junk\n")
    (root / "vendor" / "x").mkdir(parents=True)
    (root / "vendor" / "x" / "v.go").write_text("v\n")
    (root / "link.go").symlink_to(root / "a.go")
    return root


def test_go_mod_is_read_with_its_requirements_and_go_line() -> None:
    mod = parse_go_mod(GO_MOD)
    assert mod.module == "golang.zx2c4.com/wireguard"
    assert mod.go == (1, 23, 1)
    assert mod.requires["golang.org/x/crypto"] == "v0.37.0"
    assert mod.requires["golang.org/x/time"] == "v0.7.0"  # `// indirect` dropped
    assert len(mod.requires) == 7
    one_line = parse_go_mod('module "example.com/m"\ngo 1.21\nrequire golang.org/x/sys v0.1.0\n')
    assert one_line.module == "example.com/m"
    assert one_line.requires == {"golang.org/x/sys": "v0.1.0"}


def test_a_go_mod_without_module_line_is_refused() -> None:
    with pytest.raises(BuildError, match="no module line"):
        parse_go_mod("go 1.21\n")


def test_versions_compare_as_numbers() -> None:
    assert parse_version("go1.27.3") == (1, 27, 3)
    assert parse_version("go1.22rc1") == (1, 22)
    assert parse_version("1.19.8") < parse_version("1.23.1") < parse_version("1.27")
    with pytest.raises(BuildError, match="not a Go version"):
        parse_version("devel")


def test_a_go_older_than_go_mod_asks_is_refused() -> None:
    mod = parse_go_mod(GO_MOD)
    require_go(mod, (1, 23, 1), "go")
    require_go(mod, (1, 27, 3), "go")
    with pytest.raises(BuildError) as info:
        require_go(mod, (1, 19, 8), "/usr/bin/go")
    assert str(info.value) == (
        "golang.zx2c4.com/wireguard needs Go 1.23.1 or newer and /usr/bin/go is 1.19.8: "
        "pass a newer one with --go."
    )


def test_go_sum_keeps_module_hashes_not_go_mod_hashes() -> None:
    sums = go_sum_hashes(GO_SUM)
    assert sums == {
        ("github.com/google/btree", "v1.1.2"): "h1:xf4v41cLI2Z6FxbKm+8Bu+m8ifhj15JuZ9sa0jZCMUU=",
        ("golang.org/x/crypto", "v0.37.0"): "h1:kJNSjF/Xp7kU0iB2Z+9viTPMW4EqqsrywMXLJOOsXSE=",
    }


def test_module_files_leave_out_what_go_leaves_out_of_a_zip(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "m")
    assert module_files(tree) == ["a.go", "go.mod", "sub/b.go"]


def test_module_hash_is_the_one_go_computes(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "m")
    assert module_hash(tree, "example.com/m", "v1.0.0") == TREE_H1
    (tree / "sub" / "b.go").write_text("package sub // changed\n")
    assert module_hash(tree, "example.com/m", "v1.0.0") != TREE_H1


def test_a_tree_is_checked_against_go_sum(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "m")
    main_mod = parse_go_mod("module example.com/main\ngo 1.21\nrequire example.com/m v1.0.0\n")
    assert check_tree(tree, main_mod, {("example.com/m", "v1.0.0"): TREE_H1}) == (
        "example.com/m",
        "v1.0.0",
    )
    wrong = {("example.com/m", "v1.0.0"): "h1:AAAA"}
    with pytest.raises(
        BuildError, match=re.escape("is not example.com/m v1.0.0 as go.sum pins it")
    ):
        check_tree(tree, main_mod, wrong)
    with pytest.raises(BuildError, match=re.escape("go.sum has no hash for example.com/m v1.0.0")):
        check_tree(tree, main_mod, {})
    other = parse_go_mod("module example.com/main\ngo 1.21\nrequire example.com/n v1.0.0\n")
    with pytest.raises(BuildError, match=re.escape("which example.com/main does not require")):
        check_tree(tree, other, {})
    with pytest.raises(BuildError, match=re.escape("has no go.mod")):
        check_tree(tree / "sub", main_mod, {})


def test_a_source_without_go_mod_is_one_sentence_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path), "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert (
        err == f"build_wireguard_go: {tmp_path} has no go.mod: give the wireguard-go source tree.\n"
    )
