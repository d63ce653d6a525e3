"""Wilson intervals and the exact McNemar test against hand-worked values, and the report's paired table."""

import json

import pytest

from rmas_jax import report
from rmas_jax.evaluation.paired import mcnemar_exact, paired_counts, wilson_interval


def test_wilson_interval_by_hand():
  # 5 of 30, z = 1.96: centre (p + z²/2n) / (1 + z²/n) = 0.20451, half-width z·sqrt(p(1-p)/n + z²/4n²) / (...) = 0.13114
  lo, hi = wilson_interval(5, 30)
  assert lo == pytest.approx(0.07337, abs=2e-5) and hi == pytest.approx(0.33565, abs=2e-5)
  assert wilson_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-12) and wilson_interval(10, 10)[1] == pytest.approx(1.0)
  with pytest.raises(ValueError, match="outside"):
    wilson_interval(11, 10)


def test_mcnemar_exact_by_hand():
  assert mcnemar_exact(3, 0) == pytest.approx(2 / 8)  # three discordant questions, all one way: 2 · (1/2)³
  assert mcnemar_exact(5, 1) == pytest.approx(2 * 7 / 64)  # 2 · (C(6,0) + C(6,1)) / 2⁶
  assert mcnemar_exact(4, 4) == 1.0 and mcnemar_exact(0, 0) == 1.0
  assert mcnemar_exact(20, 5) == mcnemar_exact(5, 20) < 0.01


def test_paired_counts_use_shared_ids_only():
  c = paired_counts({"a": True, "b": False, "c": True, "x": True}, {"a": True, "b": True, "c": False, "y": False})
  assert c == dict(n=3, both=1, only_a=1, only_b=1, neither=0)
  with pytest.raises(ValueError, match="share no question"):
    paired_counts({"a": True}, {"b": True})


def test_report_prints_intervals_and_paired_p_values(tmp_path, capsys):
  def result(name, right):
    records = [dict(id=f"q{i}", correct=i < right) for i in range(20)]
    return dict(dataset="relay", method="recursive_mas", rounds=1, links=name, n=20, accuracy=right / 20,
                decoded_tokens_per_question=5.0, seconds_per_question=1.0, records=records)  # fmt: skip

  (tmp_path / "eval").mkdir()
  for name, right in (("trained", 18), ("fresh", 2)):
    (tmp_path / "eval" / f"{name}.json").write_text(json.dumps(result(name, right)))
  assert report.main([str(tmp_path)]) == 0
  out = capsys.readouterr().out
  assert "0.699–0.972" in out  # Wilson 95 % of 18 / 20
  assert f"| 2 | 0 | 16 | 2 | {mcnemar_exact(0, 16):.3g} |" in out
