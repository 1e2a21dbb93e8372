"""The DQN command line (``python -m fastreplay.dqn``) given hostile arguments and files: each must end the program
before any training with exit status 2 and one ``fastreplay-dqn: error: ...`` line on stderr, never a traceback
(and never after a finished run). The main scenario of each defect runs the real CLI in a subprocess (a second or
two of imports each); their variations call ``dqn.main`` in this process, the same code path."""
import os
import re
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("gymnasium")
pytest.importorskip("tqdm")
pytest.importorskip("matplotlib")
pytest.importorskip("tyro")

from fastreplay import dqn  # noqa: E402

TINY = ["--total-timesteps", "200", "--learning-starts", "100", "--eval-frequency", "0", "--eval-episodes", "2",
        "--hidden-sizes", "8", "--batch-size", "8", "--buffer-size", "500", "--no-progress", "--no-plot"]


def run_cli(tmp_path, *argv, timeout=60):
    args = list(argv)
    if "--output-dir" not in args:
        args += ["--output-dir", str(tmp_path / "runs")]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "fastreplay.dqn", *TINY, *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=str(tmp_path))


def main_error(tmp_path, capsys, *argv):
    """``dqn.main`` in this process: the exit status and stderr, as a CompletedProcess."""
    with pytest.raises(SystemExit) as exc:
        dqn.main([*TINY, "--output-dir", str(tmp_path / "runs"), *argv])
    out = capsys.readouterr()
    return subprocess.CompletedProcess(argv, exc.value.code, out.out, out.err)


def assert_one_line_error(p, pattern):
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2, (p.returncode, p.stderr[-3000:])
    assert len(lines) == 1, p.stderr[-3000:]
    assert lines[0].startswith("fastreplay-dqn: error: "), lines[0]
    assert re.search(pattern, lines[0]), lines[0]
    assert p.stdout == ""  # nothing was trained or printed


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A real checkpoint written by ``--save`` (hidden sizes [8])."""
    d = tmp_path_factory.mktemp("ckpt")
    path = d / "good.pt"
    p = run_cli(d, "--save", str(path))
    assert p.returncode == 0, p.stderr[-3000:]
    return path


# --- D32: seeds outside what torch, numpy and the buffer accept -----------------------------------------------------


@pytest.mark.parametrize("seed", ["-1", str(2**64)])
def test_out_of_range_seed_is_one_line_error(tmp_path, seed):
    # D32: -1 and 2**64 ended in numpy's / torch's tracebacks after argument checking.
    assert_one_line_error(run_cli(tmp_path, "--seed", seed), r"--seed must be an integer in \[0, 2\*\*63\), got")


def test_seed_beyond_the_buffer_range_is_one_line_error(tmp_path, capsys):
    # D32: 2**63 fits torch but not the buffer's seed.
    assert_one_line_error(main_error(tmp_path, capsys, "--seed", str(2**63)), r"--seed must be an integer in")


# --- D33: devices torch parses but the trainer cannot use -----------------------------------------------------------


@pytest.mark.parametrize("device", ["mps", "meta"])
def test_unusable_device_is_one_line_error(tmp_path, device):
    # D33: check_args only tested for CUDA; mps and meta failed later with a traceback.
    assert_one_line_error(run_cli(tmp_path, "--device", device), rf"--device '{device}': .*'cpu' or 'cuda'")


def test_missing_cuda_device_index_is_one_line_error(tmp_path, capsys):
    # D33: a CUDA index the machine does not have.
    pattern = r"--device 'cuda:99': (CUDA is not available|this machine has \d+ CUDA device)"
    assert_one_line_error(main_error(tmp_path, capsys, "--device", "cuda:99"), pattern)


# --- D19: outputs checked before training ---------------------------------------------------------------------------


def test_save_under_a_file_fails_before_training(tmp_path):
    # D19: with --eval-frequency 0 the run trained to the end and then died writing the checkpoint.
    (tmp_path / "afile").write_text("x")
    p = run_cli(tmp_path, "--save", str(tmp_path / "afile" / "dqn.pt"))
    assert_one_line_error(p, r"--save '.*afile/dqn\.pt': cannot write in directory")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no run was started


def test_save_to_a_directory_fails_before_training(tmp_path, capsys):
    # D19
    (tmp_path / "adir").mkdir()
    assert_one_line_error(main_error(tmp_path, capsys, "--save", str(tmp_path / "adir")), r"--save '.*adir' is a directory")


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_save_under_proc_fails_before_training(tmp_path, capsys):
    # D19
    assert_one_line_error(main_error(tmp_path, capsys, "--save", "/proc/fastreplay.pt"), r"--save '/proc/fastreplay\.pt'")


def test_output_dir_under_a_file_fails_before_training(tmp_path):
    # D19
    (tmp_path / "afile").write_text("x")
    p = run_cli(tmp_path, "--output-dir", str(tmp_path / "afile" / "runs"))
    assert_one_line_error(p, r"--output-dir '.*afile/runs': cannot write in directory")


def test_save_creates_its_directory_up_front(tmp_path):
    # D19: a fresh directory for --save is fine (created, then written at the end).
    target = tmp_path / "new" / "dir" / "dqn.pt"
    p = run_cli(tmp_path, "--save", str(target))
    assert p.returncode == 0, p.stderr[-3000:]
    # no probe file left; the replay buffer's checkpoint is beside the trainer's
    assert target.is_file() and sorted(os.listdir(target.parent)) == ["dqn.pt", "dqn.pt.buffer"]
    torch.load(target, weights_only=True)  # D34: a checkpoint is plain data


# --- D34: --resume of files that are not this trainer's checkpoint ---------------------------------------------------


def _write(path, data):
    path.write_bytes(data)
    return path


def test_resume_garbage_is_one_line_error(tmp_path):
    # D34: UnpicklingError traceback before.
    f = _write(tmp_path / "garbage.pt", b"this is not a checkpoint\n")
    assert_one_line_error(run_cli(tmp_path, "--resume", str(f)), r"--resume '.*garbage\.pt': not a")


def test_resume_empty_file_is_one_line_error(tmp_path, capsys):
    # D34
    f = _write(tmp_path / "empty.pt", b"")
    assert_one_line_error(main_error(tmp_path, capsys, "--resume", str(f)), r"--resume '.*empty\.pt': not a")


def test_resume_partial_file_is_one_line_error(tmp_path, checkpoint):
    # D34: a checkpoint cut short (an interrupted copy).
    f = _write(tmp_path / "partial.pt", checkpoint.read_bytes()[:3000])
    assert_one_line_error(run_cli(tmp_path, "--resume", str(f)), r"--resume '.*partial\.pt': not a readable")


def test_resume_foreign_torch_file_is_one_line_error(tmp_path):
    # D34: KeyError('q_network') traceback before.
    f = tmp_path / "foreign.pt"
    torch.save({"model": {"w": torch.zeros(2)}}, f)
    assert_one_line_error(run_cli(tmp_path, "--resume", str(f)), r"--resume '.*foreign\.pt': .*missing 'q_network'")


def test_resume_non_dict_is_one_line_error(tmp_path, capsys):
    # D34: TypeError traceback before.
    f = tmp_path / "list.pt"
    torch.save([1, 2, 3], f)
    assert_one_line_error(main_error(tmp_path, capsys, "--resume", str(f)), r"--resume '.*list\.pt': holds a list")


def test_resume_pickled_object_is_refused_not_run(tmp_path):
    # D34: a checkpoint is loaded as data (weights_only=True): a pickle that would run code is refused.
    marker = tmp_path / "ran"
    f = tmp_path / "evil.pt"
    code = (
        "import os, torch\n"
        "class Evil:\n"
        "    def __reduce__(self):\n"
        f"        return (os.system, ('touch {marker}',))\n"
        f"torch.save({{'q_network': Evil()}}, {str(f)!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert_one_line_error(run_cli(tmp_path, "--resume", str(f)), r"--resume '.*evil\.pt': not a checkpoint of plain")
    assert not marker.exists()


def test_resume_other_hidden_sizes_is_one_line_error(tmp_path, checkpoint):
    # D34: "resume with different hidden sizes" raised its ValueError from train(), as a traceback.
    p = run_cli(tmp_path, "--resume", str(checkpoint), "--hidden-sizes", "4", "4")
    assert_one_line_error(p, r"--resume '.*good\.pt': checkpoint is for CartPole-v1 with hidden sizes \[8\]")


def _edited(tmp_path, checkpoint, name, edit):
    ckpt = torch.load(checkpoint, weights_only=True)
    edit(ckpt)
    path = tmp_path / name
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize(
    "name, edit, pattern",
    [
        ("shape.pt", lambda c: c["q_network"].__setitem__("network.0.weight", torch.zeros(3, 3)),
         r"'q_network' does not fit the network: .*size mismatch for network\.0\.weight"),
        ("target.pt", lambda c: c["target_network"].pop("network.0.bias"),
         r"'target_network' does not fit the network: .*Missing key"),
        ("adam.pt", lambda c: c["optimizer"]["state"][0].__setitem__("exp_avg", torch.zeros(2)),
         r"'optimizer' does not fit the network's Adam: state 'exp_avg' has shape"),
        ("groups.pt", lambda c: c["optimizer"].__setitem__("param_groups", []),
         r"'optimizer' does not fit the network's Adam"),
        ("rng.pt", lambda c: c.__setitem__("numpy_rng", {"x": 1}), r"'numpy_rng' is not a numpy PCG64 state"),
        ("trng.pt", lambda c: c.__setitem__("torch_rng", torch.zeros(3)), r"'torch_rng' must be a torch\.uint8"),
        ("step.pt", lambda c: c.__setitem__("global_step", "x"), r"'global_step' must be an integer >= 0"),
        ("evals.pt", lambda c: c.__setitem__("evals", [1, 2]), r"'evals' must be a list of"),
    ],
)
def test_resume_inconsistent_checkpoint_is_one_line_error(tmp_path, capsys, checkpoint, name, edit, pattern):
    # D34: a checkpoint whose parts do not fit the network, optimizer or random states.
    p = main_error(tmp_path, capsys, "--resume", str(_edited(tmp_path, checkpoint, name, edit)))
    assert_one_line_error(p, pattern)


def test_resume_of_a_good_checkpoint_still_trains(tmp_path, checkpoint):
    # D34: the checks accept what --save writes, and the run continues from its step.
    p = run_cli(tmp_path, "--resume", str(checkpoint), "--total-timesteps", "300")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "CartPole-v1: 300 steps" in p.stdout
