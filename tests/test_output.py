"""netdsl/output.py: `-o DIR` switches the whole output at once, under a lock, touching only its own files.

The kill tests kill a writer at every step it takes (NETDSL_TEST_KILL_AT, in a forked child: cheap) and a
real `netdsl compile` at random moments; after recovery DIR must hold exactly the old or exactly the new
output, the files of other programs untouched, and no temporary file.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from netdsl import output
from netdsl.backends import Manifest
from netdsl.compiler import compile_paths
from netdsl.output import GENERATED_MARK, MANIFEST, OutputError, digest, recover, write_directory
from tests.test_cli import APP

OLD = APP  # the CLI tests' two-namespace program
# one file changed, one namespace gone, one new
NEW = OLD.replace("on 8080", "on 8081").replace("namespace staging", "namespace testing")
FOREIGN = {
    "README.md": b"hand-written\n",
    "production/extra.yaml": b"apiVersion: v1\nkind: ConfigMap\n",
    # another program's output, marked like netdsl's used to be
    "other/networkpolicy-x.yaml": GENERATED_MARK.encode() + b" by someone else\n",
}
TEMPORARY = (".netdsl-", ".netdsl.journal", ".netdsl.lock")


def build(tmp_path: Path, text: str) -> list[Manifest]:
    source = tmp_path / "src.seg"
    source.write_text(text, encoding="utf-8")
    result = compile_paths([str(source)], "vanilla")
    assert result.ok
    return result.manifests


def files(directory: Path) -> dict[str, bytes]:
    """Every regular file below `directory` (links are not followed), by relative path."""
    out = {}
    for dirpath, _dirs, names in os.walk(directory):
        for name in names:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                out[path.relative_to(directory).as_posix()] = path.read_bytes()
    return out


def temporaries(directory: Path) -> list[str]:
    return [p.relative_to(directory).as_posix() for p in directory.rglob("*")
            if p.name.startswith(TEMPORARY) or p.name.endswith(".tmp")]


def put(directory: Path, content: dict[str, bytes]) -> None:
    for rel, data in content.items():
        (directory / rel).parent.mkdir(parents=True, exist_ok=True)
        (directory / rel).write_bytes(data)


@pytest.fixture
def no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output, "FSYNC", False)  # a kill needs no fsync; the loop runs hundreds of times


def in_child(env: dict[str, str], action: str, directory: Path, manifests: Sequence[Manifest] = ()) -> int:
    """Run write_directory or recover in a forked child; its wait status."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.environ.update(env)
            if action == "write":
                write_directory(directory, manifests)
            else:
                recover(directory)
        except OutputError:
            code = 1
        except BaseException:
            code = 2
        os._exit(code)
    return os.waitpid(pid, 0)[1]


def killed(status: int) -> bool:
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


# --- kills ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("start", ["empty", "old"])
def test_a_kill_at_every_step_leaves_old_or_new(tmp_path: Path, no_fsync: None, start: str) -> None:
    old, new = build(tmp_path, OLD), build(tmp_path, NEW)
    out = tmp_path / "deploy"

    def reset() -> None:
        shutil.rmtree(out, ignore_errors=True)
        put(out, FOREIGN)
        if start == "old":
            write_directory(out, old)

    reset()
    old_files = files(out)
    write_directory(out, new)
    new_files = files(out)
    assert old_files != new_files
    rng = random.Random(9)
    outcomes: list[str] = []
    for step in range(1, 200):
        reset()
        status = in_child({"NETDSL_TEST_KILL_AT": str(step)}, "write", out, new)
        if not killed(status):  # the run has fewer steps: it finished
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
            assert files(out) == new_files and not temporaries(out)
            break
        committed = (out / ".netdsl.journal").exists()
        # the recovery may be killed too, at any of its own steps
        in_child({"NETDSL_TEST_KILL_AT": str(rng.randint(1, 12))}, "recover", out)
        recover(out)
        after = files(out)
        assert after in (old_files, new_files), f"killed at step {step}"
        assert not temporaries(out), f"killed at step {step}"
        outcome = "new" if after == new_files else "old"
        assert outcome == "new" or not committed, f"killed at step {step}"
        assert outcome == "new" or "new" not in outcomes, f"killed at step {step}: old after new"
        outcomes.append(outcome)
    else:
        pytest.fail("the writer never finished")
    assert set(outcomes) == {"old", "new"}  # kills landed both before and after the commit point
    assert step > 8


def test_an_obstacle_after_the_commit_point_is_reported_and_the_switch_completed_later(
    tmp_path: Path, no_fsync: None
) -> None:
    old, new = build(tmp_path, OLD), build(tmp_path, NEW)
    out, reference = tmp_path / "deploy", tmp_path / "reference"
    write_directory(reference, new)
    write_directory(out, old)
    for step in range(1, 50):  # the first kill that leaves a committed journal
        shutil.rmtree(out)
        write_directory(out, old)
        assert killed(in_child({"NETDSL_TEST_KILL_AT": str(step)}, "write", out, new))
        if (out / ".netdsl.journal").exists():
            break
    (out / "testing").write_text("in the way\n", encoding="utf-8")  # where the new output needs a folder
    with pytest.raises(OutputError, match=r"testing is in the way.*the switch is half done"):
        write_directory(out, new)
    (out / "testing").unlink()
    assert recover(out) is True
    assert files(out) == files(reference) and not temporaries(out)


def big_program(services: int, port: int) -> str:
    lines = []
    for ns in range(4):
        lines.append(f"namespace ns{ns} {{\n  isolate\n  allow dns\n")
        for i in range(services):
            lines.append(f"  service s{i} = app=s{i}\n  s{i} accepts all pods on {port + i}\n")
        lines.append("}\n")
    return "".join(lines)


def test_a_real_compile_killed_at_random_moments(tmp_path: Path) -> None:
    """`netdsl compile -o` in a subprocess, SIGKILLed at a random moment of its write, then recovered."""
    (tmp_path / "old.seg").write_text(big_program(40, 1000), encoding="utf-8")
    (tmp_path / "new.seg").write_text(big_program(30, 2000), encoding="utf-8")
    out, pristine = tmp_path / "deploy", tmp_path / "pristine"
    command = [sys.executable, "-m", "netdsl", "compile", "-o", str(out), str(tmp_path / "new.seg")]
    put(pristine, FOREIGN)
    subprocess.run([*command[:5], str(pristine), str(tmp_path / "old.seg")], check=True, timeout=120)
    old_files = files(pristine)

    def start() -> tuple[subprocess.Popen[bytes], float]:
        """The run, and when it took the lock (its write began)."""
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(pristine, out, symlinks=True)
        proc = subprocess.Popen(command, stderr=subprocess.DEVNULL)
        while not (out / ".netdsl.lock").exists() and proc.poll() is None:
            time.sleep(0.001)
        return proc, time.monotonic()

    proc, began = start()
    assert proc.wait(timeout=120) == 0
    writing = time.monotonic() - began
    new_files = files(out)
    rng = random.Random(4)
    seen = set()
    for _ in range(int(os.environ.get("NETDSL_KILL_RUNS", "8"))):
        proc, began = start()
        time.sleep(rng.uniform(0, 1.2 * writing))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=120)
        recover(out)
        after = files(out)
        assert after in (old_files, new_files)
        assert not temporaries(out)
        seen.add(after == new_files)
    print(f"write phase {writing:.3f} s; outcomes seen (new?): {seen}")


def test_full_disk_leaves_the_old_output(tmp_path: Path, no_fsync: None) -> None:
    """RLIMIT_FSIZE makes writes fail (EFBIG) the way a full disk does (ENOSPC)."""
    out = tmp_path / "deploy"
    put(out, FOREIGN)
    write_directory(out, build(tmp_path, OLD))
    before = files(out)
    new = build(tmp_path, NEW)
    for limit in (1, 200, 1000):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
            try:
                write_directory(out, new)
            except OutputError:
                os._exit(1)
            except BaseException:
                os._exit(2)
            os._exit(0)
        status = os.waitpid(pid, 0)[1]
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 1
        assert files(out) == before and not temporaries(out)


def test_full_disk_through_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "app.seg").write_text(OLD, encoding="utf-8")
    out = tmp_path / "deploy"

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))

    result = subprocess.run([sys.executable, "-m", "netdsl", "compile", "-o", str(out), str(tmp_path / "app.seg")],
                            capture_output=True, timeout=120, preexec_fn=small_files, check=False)
    assert result.returncode == 1
    assert result.stderr.decode().splitlines()[0].endswith("[output]") and b"Traceback" not in result.stderr
    assert not out.exists()  # a directory the run created is removed again


# --- concurrency ---------------------------------------------------------------------------------------------


def cli(out: Path, source: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "netdsl", "compile", "-o", str(out), str(source)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})


def test_two_runs_at_once_take_turns(tmp_path: Path) -> None:
    sources = []
    for name, text in (("a", OLD), ("b", NEW)):
        sources.append(tmp_path / f"{name}.seg")
        sources[-1].write_text(text, encoding="utf-8")
    expected = []
    for source in sources:
        proc = cli(tmp_path / f"only-{source.stem}", source)
        assert proc.wait(timeout=120) == 0
        expected.append(files(tmp_path / f"only-{source.stem}"))
    out = tmp_path / "deploy"
    for _ in range(2):
        shutil.rmtree(out, ignore_errors=True)
        # each holds the lock half a second: they overlap
        procs = [cli(out, source, {"NETDSL_TEST_PAUSE_AT": "1:0.5"}) for source in sources]
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
        assert files(out) in expected
        assert not temporaries(out)


def test_a_run_that_cannot_get_the_lock_names_the_holder(tmp_path: Path) -> None:
    (tmp_path / "a.seg").write_text(OLD, encoding="utf-8")
    out = tmp_path / "deploy"
    holder = cli(out, tmp_path / "a.seg", {"NETDSL_TEST_PAUSE_AT": "1:30"})
    deadline = time.monotonic() + 60
    while not (out / ".netdsl.lock").exists() or not (out / ".netdsl.lock").read_text():
        assert time.monotonic() < deadline and holder.poll() is None
        time.sleep(0.05)
    try:
        waiter = cli(out, tmp_path / "a.seg", {"NETDSL_LOCK_TIMEOUT": "0.3"})
        _, err = waiter.communicate(timeout=120)
        assert waiter.returncode == 1
        text = err.decode()
        assert f"another netdsl run (pid {holder.pid})" in text and "[output]" in text, text
    finally:
        holder.kill()
        holder.wait(timeout=60)
    # the holder was killed holding the lock: the next run takes it over
    assert cli(out, tmp_path / "a.seg").wait(timeout=120) == 0
    assert not temporaries(out)


# --- what netdsl may touch ---------------------------------------------------------------------------------


def test_the_manifest_lists_exactly_what_was_written(tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    put(out, FOREIGN)
    write_directory(out, build(tmp_path, OLD))
    listing = json.loads((out / MANIFEST).read_text(encoding="utf-8"))["files"]
    written = {rel: data for rel, data in files(out).items() if rel not in FOREIGN and rel != MANIFEST}
    assert listing == {rel: digest(data) for rel, data in written.items()}
    assert "kustomization.yaml" in listing


def test_another_programs_output_in_a_subdirectory_survives(tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    put(out, FOREIGN)
    write_directory(out, build(tmp_path, OLD))
    write_directory(out, build(tmp_path, "namespace x {\n  isolate\n}\n"))  # every earlier file stale
    assert {rel: files(out)[rel] for rel in FOREIGN} == FOREIGN
    assert not (out / "staging").exists()  # the folder netdsl emptied is gone


def test_a_directory_from_before_the_manifest_loses_nothing(tmp_path: Path) -> None:
    """Without a manifest, netdsl replaces marked files at the paths it writes and removes nothing."""
    out = tmp_path / "deploy"
    stale = GENERATED_MARK.encode() + b" Do not edit\nkind: NetworkPolicy\n"
    put(out, {"staging/networkpolicy-gone.yaml": stale,
              "kustomization.yaml": GENERATED_MARK.encode() + b" old\n",
              ".netdsl-abc_1234.tmp": b"left by an old netdsl\n",
              "production/.netdsl-zz99zz99.tmp": b"left by an old netdsl\n"})
    outcome = write_directory(out, build(tmp_path, OLD))
    assert outcome.removed == []
    assert (out / "staging/networkpolicy-gone.yaml").read_bytes() == stale
    assert (out / "kustomization.yaml").read_bytes().startswith(GENERATED_MARK.encode() + b" Do not edit")
    assert not temporaries(out)  # the old netdsl's temporaries are cleaned up


def test_a_file_edited_since_netdsl_wrote_it_is_kept(tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    write_directory(out, build(tmp_path, OLD))
    edited = out / "staging/networkpolicy-web.yaml"
    edited.write_bytes(edited.read_bytes() + b"# my change\n")
    before = files(out)
    smaller = OLD[: OLD.index("namespace staging")]
    with pytest.raises(OutputError, match="changed since netdsl wrote it and is no longer produced"):
        write_directory(out, build(tmp_path, smaller))
    with pytest.raises(OutputError, match="changed since netdsl wrote it; not replacing it"):
        write_directory(out, build(tmp_path, OLD.replace("on 80\n", "on 81\n")))
    assert files(out) == before and not temporaries(out)


@pytest.mark.parametrize("listed", ["../outside.yaml", "/etc/passwd", "a//b.yaml", ".netdsl.lock"])
def test_a_hostile_manifest_removes_nothing(tmp_path: Path, listed: str) -> None:
    (tmp_path / "outside.yaml").write_text("mine\n", encoding="utf-8")
    out = tmp_path / "deploy"
    write_directory(out, build(tmp_path, OLD))
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    manifest["files"][listed] = digest(b"mine\n")
    (out / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    before = files(out)
    with pytest.raises(OutputError, match="not a path netdsl writes"):
        write_directory(out, build(tmp_path, NEW))
    assert files(out) == before
    assert (tmp_path / "outside.yaml").read_text(encoding="utf-8") == "mine\n"


def test_a_corrupt_manifest_is_an_error(tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    write_directory(out, build(tmp_path, OLD))
    (out / MANIFEST).write_text("{not json", encoding="utf-8")
    with pytest.raises(OutputError, match="is not a manifest netdsl wrote"):
        write_directory(out, build(tmp_path, NEW))


def test_a_stale_staging_directory_is_removed(tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    write_directory(out, build(tmp_path, OLD))
    before = files(out)
    put(out, {".netdsl-staging-999999/0": b"half written", ".netdsl.lock": b"999999\n"})
    assert recover(out) is False
    assert files(out) == before and not temporaries(out)


# --- links -------------------------------------------------------------------------------------------------


def test_a_linked_folder_inside_dir_is_never_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "deploy"
    out.mkdir()
    (out / "production").symlink_to(elsewhere)
    with pytest.raises(OutputError, match="production is a symbolic link; netdsl never writes through links"):
        write_directory(out, build(tmp_path, OLD))
    assert list(elsewhere.iterdir()) == []
    assert files(out) == {}


def test_a_linked_folder_of_stale_files_is_never_followed(tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    write_directory(out, build(tmp_path, OLD))
    shutil.move(out / "staging", tmp_path / "moved")  # same files, now reached through a link
    (out / "staging").symlink_to(tmp_path / "moved")
    before = files(tmp_path / "moved")
    with pytest.raises(OutputError, match="symbolic link"):
        write_directory(out, build(tmp_path, OLD[: OLD.index("namespace staging")]))
    assert files(tmp_path / "moved") == before


@pytest.mark.parametrize("name", ["kustomization.yaml", "production/networkpolicy-backend.yaml", MANIFEST,
                                  ".netdsl.lock"])
def test_a_linked_file_inside_dir_is_never_written_through(tmp_path: Path, name: str) -> None:
    target = tmp_path / "target.txt"
    target.write_text("keep\n", encoding="utf-8")
    out = tmp_path / "deploy"
    (out / name).parent.mkdir(parents=True)
    (out / name).symlink_to(target)
    with pytest.raises(OutputError, match="is a symbolic link"):
        write_directory(out, build(tmp_path, OLD))
    assert target.read_text(encoding="utf-8") == "keep\n"
    assert (out / name).is_symlink()


def test_dir_itself_may_be_a_link(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "deploy").symlink_to(real)
    write_directory(tmp_path / "deploy", build(tmp_path, OLD))
    assert (tmp_path / "deploy").is_symlink()
    assert (real / "kustomization.yaml").is_file() and (real / MANIFEST).is_file()


# --- modes, arguments ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_files_follow_the_umask(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        write_directory(tmp_path / "deploy", build(tmp_path, OLD))
    finally:
        os.umask(previous)
    for path in [tmp_path / "deploy", *(tmp_path / "deploy").rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o777 if path.is_dir() else 0o666) & ~umask, path


def test_an_empty_output_directory_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "app.seg").write_text(OLD, encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "netdsl", "compile", "-o", "", "app.seg"], cwd=tmp_path,
                            capture_output=True, timeout=120, check=False)
    assert result.returncode == 2
    assert b"must not be empty" in result.stderr and b"Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.seg"]


def test_a_path_that_would_leave_dir_is_refused(tmp_path: Path) -> None:
    escaping = Manifest("networking.k8s.io/v1", "NetworkPolicy", "x", "..", {}, "", {}, "text")
    with pytest.raises(OutputError, match="not a path netdsl writes"):
        write_directory(tmp_path / "deploy", [escaping])
    assert sorted(p.name for p in tmp_path.iterdir()) == []
