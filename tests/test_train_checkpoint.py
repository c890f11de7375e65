import json

import torch

from mobilediff.train.checkpoint import complete_checkpoints, latest_checkpoint, restore, save_checkpoint


def _model_and_opt(seed):
    torch.manual_seed(seed)
    m = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    m(torch.randn(2, 4)).sum().backward()
    opt.step()
    return m, opt


def test_roundtrip_restores_weights_and_optimizer(tmp_path):
    m, opt = _model_and_opt(0)
    save_checkpoint(tmp_path, 7, {"m": m.state_dict()}, opt, {"note": "x"})
    m2, opt2 = _model_and_opt(1)
    ck = latest_checkpoint(tmp_path)
    assert ck.step == 7 and ck.state["note"] == "x"
    restore(ck, {"m": m2}, opt2)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))
    s1, s2 = opt.state_dict(), opt2.state_dict()
    for k in s1["state"]:
        for name, v in s1["state"][k].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(s2["state"][k][name]))
    assert s1["param_groups"] == s2["param_groups"]


def test_incomplete_checkpoints_are_never_resumed(tmp_path):
    m, opt = _model_and_opt(0)
    save_checkpoint(tmp_path, 5, {"m": m.state_dict()}, opt, {})
    # a save cut off midway: the folder of a later step without the completeness marker, and a stray .partial
    cut = tmp_path / "checkpoints" / "checkpoint-0000010"
    cut.mkdir()
    (cut / "m.safetensors").write_bytes(b"garbage")
    (cut / "state.json").write_text(json.dumps({"step": 10}))
    (tmp_path / "checkpoints" / ".checkpoint-0000012.abc.partial").mkdir()
    assert latest_checkpoint(tmp_path).step == 5


def test_only_the_newest_are_kept(tmp_path):
    m, opt = _model_and_opt(0)
    for s in (1, 2, 3, 4):
        save_checkpoint(tmp_path, s, {"m": m.state_dict()}, opt, {}, keep=2)
    assert [c.step for c in complete_checkpoints(tmp_path)] == [3, 4]


def test_checkpoint_modes_follow_the_umask(tmp_path):
    """A checkpoint folder is 0o777 and its files 0o666 less the umask (as every output of mobilediff.io), not
    tempfile's private 0o700."""
    import os
    import stat

    m, opt = _model_and_opt(0)
    for mask in (0o022, 0o027):
        old = os.umask(mask)
        try:
            path = save_checkpoint(tmp_path / oct(mask), 1, {"m": m.state_dict()}, opt, {})
        finally:
            os.umask(old)
        assert stat.S_IMODE(path.stat().st_mode) == 0o777 & ~mask
        assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in path.iterdir()} == \
            {f.name: 0o666 & ~mask for f in path.iterdir()}
