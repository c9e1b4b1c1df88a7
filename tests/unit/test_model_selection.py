"""The model and its threshold are chosen on validation; the test split only reports.

Each candidate here scores a row by one column of the data, so which model wins on which
split is set by construction: the validation winner's column separates fraud on the
validation rows and is noise on the test rows, and the other way round for the test
winner. Choosing on test (as ``train`` once did) picks the test winner; honest
selection picks the validation winner, and changing only the test rows changes no
choice.
"""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.pipeline import make_pipeline

from skewless.settings import Settings
from training import selection, trainer
from training.evaluation import best_threshold
from training.models import Candidate
from training.selection import fit_and_choose, report_on_test

N = 1000  # time_split: rows 0-599 train, 600-799 validation, 800-999 test
VAL, TEST = slice(600, 800), slice(800, 1000)
COLUMN = {"hgb": "a", "logreg": "b", "hgb_no_windows": "c"}


class ColumnScore(ClassifierMixin, BaseEstimator):
    """A "model" whose fraud score is one input column, as given."""

    def __init__(self, column: int = 0):
        self.column = column

    def fit(self, X, y):
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X):
        s = np.clip(np.nan_to_num(np.asarray(X, dtype=float)[:, self.column]), 0.0, 1.0)
        return np.column_stack([1 - s, s])


def fake_candidates(*_args, **_kwargs) -> list[Candidate]:
    # Each sees all three columns and scores by its own; hgb_no_windows (a baseline, never
    # choosable) is near perfect everywhere.
    return [Candidate(name, make_pipeline(ColumnScore(i)), ["a", "b", "c"], f"scores by column {col}")
            for i, (name, col) in enumerate(COLUMN.items())]


def frame(val_winner: str, test_winner: str, seed: int = 0, test_seed: int | None = None) -> pd.DataFrame:
    """``N`` transactions in time order; the winner's column separates fraud on its split."""
    rng = np.random.default_rng(seed)
    label = (rng.random(N) < 0.1).astype(int)
    u = rng.random((N, 3))
    df = pd.DataFrame({
        "transaction_id": [f"t{i}" for i in range(N)],
        "event_timestamp": pd.Timestamp("2026-06-01", tz="UTC") + pd.to_timedelta(np.arange(N) * 60, unit="s"),
        "amount": rng.lognormal(4, 1, N), "label": label, "a": u[:, 0], "b": u[:, 1],
        "c": np.where(label == 1, 0.8 + 0.2 * u[:, 2], 0.2 * u[:, 2]),
    })
    if test_seed is not None:  # other test rows: fresh labels, amounts and noise, same train and validation
        t = np.random.default_rng(test_seed)
        df.loc[800:, "label"] = (t.random(200) < 0.1).astype(int)
        df.loc[800:, ["amount", "a", "b"]] = np.column_stack([t.lognormal(4, 1, 200), t.random((200, 2))])
    for part, winner in ((VAL, val_winner), (TEST, test_winner)):
        rows = df.index[part]
        noise = rng.random(len(rows))
        y = df.loc[rows, "label"].to_numpy()
        df.loc[rows, COLUMN[winner]] = np.where(y == 1, 0.55 + 0.45 * noise, 0.6 * noise)  # strong, not perfect
    return df


def split(df):
    return df.iloc[:600], df.iloc[VAL], df.iloc[TEST]


@pytest.mark.parametrize("val_winner,test_winner", [("hgb", "logreg"), ("logreg", "hgb")])
def test_the_validation_winner_is_chosen_where_the_test_split_prefers_another(val_winner, test_winner):
    train_df, val_df, test_df = split(frame(val_winner, test_winner))
    chosen = fit_and_choose(fake_candidates(), train_df, val_df, review_cost=5.0, target_precision=0.8)
    results, _ = report_on_test(chosen, test_df, review_cost=5.0, target_precision=0.8)

    assert chosen.chosen == val_winner and chosen.split == "validation"
    assert "hgb_no_windows" not in chosen.eligible  # the best on every split, but a baseline
    # The scenario is real: on test the other model is clearly better (choosing there flips the choice).
    assert results[test_winner]["pr_auc"] > results[val_winner]["pr_auc"] + 0.3
    assert results[val_winner]["val_pr_auc"] > results[test_winner]["val_pr_auc"] + 0.3
    # Each threshold is the cost-best one on validation, not on test.
    for name, f in chosen.fitted.items():
        s_val = val_df[COLUMN[name]].to_numpy()
        expected = best_threshold(val_df["label"].to_numpy(), s_val, val_df["amount"].to_numpy(), 5.0).threshold
        assert results[name]["threshold"] == f.threshold == expected


def test_the_choosing_functions_take_no_test_data():
    for fn in (selection.fit_and_choose, selection.choose):
        params = list(inspect.signature(fn).parameters)
        assert not [p for p in params if "test" in p], (fn.__name__, params)
    assert list(inspect.signature(selection.fit_and_choose).parameters)[:3] == ["cands", "train_df", "val_df"]


def test_choose_prefers_validation_pr_auc_then_lower_cost_and_skips_baselines():
    val = {"hgb": {"pr_auc": 0.5, "cost": 10.0}, "logreg": {"pr_auc": 0.5, "cost": 9.0},
           "hgb_no_windows": {"pr_auc": 0.9, "cost": 1.0}}
    assert selection.choose(val, ("hgb", "logreg")) == "logreg"
    assert selection.choose({**val, "hgb": {"pr_auc": 0.51, "cost": 99.0}}, ("hgb", "logreg")) == "hgb"
    assert selection.choose({**val, "logreg": {"pr_auc": float("nan"), "cost": 0.0}}, ("hgb", "logreg")) == "hgb"


@pytest.fixture
def offline_trainer(monkeypatch):
    """``trainer.train`` on a given frame: the lake, Feast, MLflow and the registry replaced
    by the frame and a record of what would be tracked; the selection code is the real one."""
    tracked: dict = {}

    def run(data: pd.DataFrame) -> dict:
        monkeypatch.setattr(trainer, "service_request_inputs", lambda store, name: ())
        monkeypatch.setattr(trainer, "label_frame", lambda *a, **k: data[["transaction_id", "event_timestamp", "label"]])
        monkeypatch.setattr(trainer, "training_set", lambda *a, **k: data)
        monkeypatch.setattr(trainer, "feature_names", lambda store, name: ["a", "b", "c"])
        monkeypatch.setattr(trainer, "candidates", fake_candidates)
        monkeypatch.setattr(trainer, "register", lambda settings, run_id: "1")

        def log_run(settings, params, metrics, artifact, plots, tags):
            tracked.update(params=params, metrics=metrics, artifact=artifact, tags=tags)
            return "run-1"

        monkeypatch.setattr(trainer, "log_run", log_run)

        def log_drift_reference(settings, run_id, data, features, scores, **meta):
            tracked.update(drift_reference={"run_id": run_id, "features": list(features), "scores": len(scores), **meta})

        monkeypatch.setattr(trainer, "log_drift_reference", log_drift_reference)
        summary = trainer.train(Settings(), SimpleNamespace(project="p"))
        return {**summary, "tracked": dict(tracked)}

    return run


@pytest.mark.parametrize("val_winner,test_winner", [("hgb", "logreg"), ("logreg", "hgb")])
def test_train_chooses_on_validation_and_records_it(offline_trainer, val_winner, test_winner):
    summary = offline_trainer(frame(val_winner, test_winner))
    res, tracked = summary["results"], summary["tracked"]

    assert summary["chosen"] == val_winner
    assert res[test_winner]["pr_auc"] > res[val_winner]["pr_auc"]  # choosing on test would have picked it
    assert summary["selected_on"] == "validation" and summary["selection_metric"] == "pr_auc"
    assert tracked["params"]["selected_on"] == "validation" and tracked["tags"]["selected_on"] == "validation"
    assert tracked["params"]["chosen_model"] == val_winner
    assert tracked["metrics"][f"{val_winner}.val_pr_auc"] == res[val_winner]["val_pr_auc"]
    artifact = tracked["artifact"]
    assert artifact.candidate == val_winner and artifact.threshold == res[val_winner]["threshold"]
    # The drift reference is the chosen model's: its features, its scores on the test rows.
    ref = tracked["drift_reference"]
    assert ref["run_id"] == "run-1" and ref["features"] == artifact.features
    assert ref["scores"] == tracked["params"]["test_rows"] and ref["model_version"] == artifact.version


def test_changing_only_the_test_split_changes_no_choice(offline_trainer):
    """Same train and validation rows, two different test splits (one favouring each
    model): the same model, the same thresholds; only the reported test figures move."""
    first = offline_trainer(frame("hgb", "logreg", test_seed=1))
    second = offline_trainer(frame("hgb", "hgb", test_seed=2))

    assert first["chosen"] == second["chosen"] == "hgb"
    for name in COLUMN:
        a, b = first["results"][name], second["results"][name]
        assert a["threshold"] == b["threshold"]
        assert {k: a[k] for k in a if k.startswith("val_")} == {k: b[k] for k in b if k.startswith("val_")}
    assert first["results"]["logreg"]["pr_auc"] > first["results"]["hgb"]["pr_auc"]
    assert second["results"]["hgb"]["pr_auc"] > second["results"]["logreg"]["pr_auc"]
