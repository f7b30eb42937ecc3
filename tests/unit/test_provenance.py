"""The commit a run records, read from a checkout's .git files without running git."""

from hicl_app.core.provenance import cpu_model, git_commit, provenance

SHA = "0123456789abcdef0123456789abcdef01234567"


def test_commit_of_a_plain_checkout_loose_and_packed(tmp_path):
    git = tmp_path / "repo" / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "refs" / "heads" / "main").write_text(SHA + "\n")
    assert git_commit(tmp_path / "repo") == SHA
    (git / "refs" / "heads" / "main").unlink()
    (git / "packed-refs").write_text(f"# pack-refs with: peeled\n{SHA} refs/heads/main\n^{'f' * 40}\n")
    assert git_commit(tmp_path / "repo") == SHA
    (git / "HEAD").write_text(SHA[::-1] + "\n")  # a detached HEAD
    assert git_commit(tmp_path / "repo") == SHA[::-1]


def test_commit_of_a_worktree_and_of_no_checkout(tmp_path):
    common = tmp_path / "main" / ".git"
    own = common / "worktrees" / "wt"
    (common / "refs" / "heads").mkdir(parents=True)
    own.mkdir(parents=True)
    (common / "refs" / "heads" / "topic").write_text(SHA)
    (own / "HEAD").write_text("ref: refs/heads/topic\n")
    (own / "commondir").write_text("../..\n")
    (tmp_path / "wt").mkdir()
    (tmp_path / "wt" / ".git").write_text(f"gitdir: {own}\n")
    assert git_commit(tmp_path / "wt") == SHA
    assert git_commit(tmp_path / "nothing") is None
    assert cpu_model() and set(provenance()) == {"hicl", "hicl_commit", "cpu"}
