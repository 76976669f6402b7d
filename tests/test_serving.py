"""Ranking metrics on hand-computed cases; the recommender; the pyfunc model round trip."""

from __future__ import annotations

import re

import math

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from pipeline import evaluate, experiment
from pipeline.cli import cli
from pipeline.config import DataConfig, ModelConfig, RunConfig
from pipeline.data import from_raw
from pipeline.optim import StoppingRule


def test_ranking_metrics_by_hand():
    # 1 user, 6 items; trained on item 0; test: items 1 (5 stars), 2 (2 stars), 3 (4 stars)
    train = from_raw(np.array([1]), np.array([0]), np.array([3.0]), rating_scale=(1, 5))
    train = train.__class__(**{**train.__dict__, "item_ids": np.arange(6)})
    test = train.__class__(**{**train.__dict__, "users": np.array([0, 0, 0], np.int32),
                              "items": np.array([1, 2, 3], np.int32), "ratings": np.array([5.0, 2.0, 4.0])})
    # predicted order of candidates (item 0 excluded as trained): 3, 5, 1, 4, 2
    scores = np.array([[9.0, 3.0, 0.0, 5.0, 1.0, 4.0]])
    m = evaluate.ranking_metrics(lambda users: scores[[0] * len(users)], train, test, k=3, threshold=4.0)
    # top-3 = [3, 5, 1]; relevant {1, 3}; hits [1, 0, 1]
    assert m["precision_at_3"] == pytest.approx(2 / 3)
    assert m["recall_at_3"] == pytest.approx(1.0)
    dcg = 1 + 1 / math.log2(4)
    idcg = 1 + 1 / math.log2(3)
    assert m["ndcg_at_3"] == pytest.approx(dcg / idcg)
    assert m["map_at_3"] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert m["coverage_at_3"] == pytest.approx(3 / 6)


def test_recommender_predicts_ranks_and_falls_back(small_synthetic):
    cfg = RunConfig(data=DataConfig(dataset="unused"), model=ModelConfig.of("mf", rank=3),
                    rule=StoppingRule(gtol=1e-6, max_iter=100), optimizers=("lbfgs",))
    prep = experiment.prepare(cfg, small_synthetic)
    res, metrics = experiment.fit(prep, "lbfgs", cfg)
    assert {"precision_at_10", "recall_at_10", "ndcg_at_10", "map_at_10", "coverage_at_10"} <= set(metrics)
    from pipeline.recommender import Recommender
    rec = Recommender.from_fit(prep.objective, res.x, prep.ratings, prep.split.train)
    t = prep.split.test
    raw_u, raw_i = prep.ratings.user_ids[t.users], prep.ratings.item_ids[t.items]
    expected = np.clip(prep.objective.predict(res.x, t.users, t.items), 1, 5)
    np.testing.assert_allclose(rec.predict(raw_u, raw_i), expected, rtol=1e-12)
    np.testing.assert_allclose(rec.predict(raw_u.astype(str), raw_i), expected, rtol=1e-12)  # ids as text
    fallback = rec.predict(np.array([10**9]), raw_i[:1])
    assert fallback[0] == pytest.approx(np.clip(prep.objective.mu + rec.scorer.c[t.items[0]], 1, 5))
    top = rec.recommend([raw_u[0], 10**9], n=5)
    assert len(top) == 10 and list(top["rank"][:5]) == [1, 2, 3, 4, 5]
    seen = set(prep.ratings.item_ids[prep.split.train.items[prep.split.train.users == t.users[0]]].tolist())
    assert not seen & set(top[top["user"] == raw_u[0]]["item"].tolist())  # nothing already rated
    assert top["score"].is_monotonic_decreasing or (top.groupby("user")["score"].apply(lambda s: s.is_monotonic_decreasing).all())


def _fitted_recommender(small_synthetic):
    from pipeline.recommender import Recommender
    cfg = RunConfig(data=DataConfig(dataset="unused"), model=ModelConfig.of("mf", rank=3),
                    rule=StoppingRule(gtol=1e-6, max_iter=60), optimizers=("lbfgs",))
    prep = experiment.prepare(cfg, small_synthetic)
    res, _ = experiment.fit(prep, "lbfgs", cfg)
    return Recommender.from_fit(prep.objective, res.x, prep.ratings, prep.split.train)


def test_recommend_in_blocks_gives_the_same_lists_and_bounds_its_memory(small_synthetic, monkeypatch):
    """Issue 22, class 9: 200,000 users built one dense users x items matrix (2.0 GB). Blocks of a
    few users give the same table as one block, to the bit; the scores held at once stay within
    BLOCK_CELLS whatever the number of users."""
    rec = _fitted_recommender(small_synthetic)
    users = list(rec.user_ids[::3]) + [10**9, "nope"] + list(rec.user_ids[1::7])
    whole = rec.recommend(users, n=7)
    held = []
    scores = rec.scorer.scores
    monkeypatch.setattr(rec.scorer, "scores", lambda u: held.append(len(u) * len(rec.item_ids)) or scores(u))
    monkeypatch.setattr(type(rec), "BLOCK_CELLS", 5 * len(rec.item_ids))
    pd.testing.assert_frame_equal(rec.recommend(users, n=7), whole)
    assert max(held) <= 5 * len(rec.item_ids) and len(held) == -(-len(users) // 5)
    assert len(whole) == 7 * len(users)


@pytest.mark.parametrize("damage", ["nan", "short", "foreign", "scale"])
def test_a_damaged_model_file_is_one_line_naming_it(small_synthetic, tmp_path, damage):
    """Issue 22, class 14: NaN factors gave empty lists and NaN predictions with exit 0; a factor
    matrix shorter than its id map an IndexError for a late user."""
    from pipeline.data import DataError
    from pipeline.recommender import Recommender
    path = _fitted_recommender(small_synthetic).save(tmp_path / "model.npz")
    with np.load(path, allow_pickle=False) as z:
        fields = {k: z[k] for k in z.files}
    if damage == "nan":
        fields["scorer_P"] = fields["scorer_P"].copy()
        fields["scorer_P"][3, 0] = np.nan
    elif damage == "short":
        fields["scorer_P"] = fields["scorer_P"][:-5]
    elif damage == "foreign":
        fields["scorer"] = np.array("http.server:HTTPServer")  # a module this process has not loaded
    else:
        fields["scale"] = np.array([5.0, np.inf])
    np.savez(path, **fields)
    with pytest.raises(DataError, match=r"model\.npz: ") as err:
        Recommender.load(path)
    assert "\n" not in str(err.value)


def test_pyfunc_round_trip_and_recommend_cli(tmp_path, small_synthetic, tracking_uri, monkeypatch):
    import mlflow
    from pipeline.tracking import MlflowTracker
    monkeypatch.chdir(tmp_path)
    tracker = MlflowTracker(tracking_uri, artifact_root=tmp_path / "art")
    cfg = RunConfig(data=DataConfig(dataset="unused"), model=ModelConfig.of("mf", rank=3),
                    rule=StoppingRule(gtol=1e-6, max_iter=50), optimizers=("lbfgs",))
    out = experiment.compare(cfg, tracker, ratings=small_synthetic)
    uri = out.model_uris["lbfgs"]
    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(uri)
    t = out.prepared.split.test
    frame = pd.DataFrame({"user": out.prepared.ratings.user_ids[t.users], "item": out.prepared.ratings.item_ids[t.items]})
    pred = np.asarray(model.predict(frame))
    expected = np.clip(out.prepared.objective.predict(out.results["lbfgs"].x, t.users, t.items), 1, 5)
    np.testing.assert_allclose(pred, expected, rtol=1e-12)
    unknown = np.asarray(model.predict(pd.DataFrame({"user": [10**9], "item": [10**9]})))
    assert unknown[0] == pytest.approx(np.clip(out.prepared.objective.mu, 1, 5))
    assert model.metadata.signature is not None
    # ids of the wrong type get the fallback through the pyfunc too (no MLflow schema error)
    mixed = np.asarray(model.predict(pd.DataFrame({"user": ["nope", None, 1.5, str(frame["user"][0])],
                                                   "item": [frame["item"][0]] * 4}, dtype=object)))
    assert mixed[3] == pytest.approx(pred[0])
    known_item = np.clip(out.prepared.objective.mu + out.prepared.objective.unpack(out.results["lbfgs"].x)[3][t.items[0]], 1, 5)
    np.testing.assert_allclose(mixed[:3], known_item, rtol=1e-12)
    res = CliRunner().invoke(cli, ["recommend", "--model-uri", uri, "--user", str(frame["user"][0]), "-n", "3"])
    assert res.exit_code == 0, res.output
    assert len([l for l in res.stdout.splitlines()[1:] if l.strip()]) == 3
    res = CliRunner().invoke(cli, ["recommend", "--model-uri", "runs:/nope/model", "--user", "1"])
    assert res.exit_code == 2 and "cannot load" in res.stderr


def test_ids_are_labels_in_serving_big_and_wrong_typed_ids_never_borrow_a_list():
    """Ids above 2^53 stay exact, and an id that is not an integer label is unknown (the
    fallback), never mapped to a real user (findings 5 and 11 of the hostile-input issue)."""
    from pipeline.objectives import BiasedMF
    from pipeline.recommender import Recommender
    big = 2**53
    users = np.array([big + 2, big + 2, big + 3, big + 3, -(2**62), -(2**62)])  # -2^62: the old "not a number" key
    items = np.array([1, 2, 1, 3, 2, 3])
    r = from_raw(users, items, np.array([5.0, 1.0, 1.0, 5.0, 3.0, 4.0]), rating_scale=(1, 5))
    f = BiasedMF(r, rank=2, reg=0.1, kernel="numpy")
    x = f.init(np.random.default_rng(0)) + 0.3
    rec = Recommender.from_fit(f, x, r, r)
    assert rec._index(rec.user_ids, [big + 2, big + 3, big + 1]).tolist() == [
        int(np.searchsorted(rec.user_ids, big + 2)), int(np.searchsorted(rec.user_ids, big + 3)), -1]
    assert rec._index(rec.user_ids, ["user_id", str(big + 3), str(big + 3) + ".0", "nan", None, 1.5, True,
                                     f"0{big + 3}"]).tolist() == [-1, rec._index(rec.user_ids, [big + 3])[0], -1, -1,
                                                                  -1, -1, -1, -1]
    top = rec.recommend(["user_id", str(big + 1)], n=2)  # a header line and a near miss: both fallback
    fallback = rec.recommend([10**6], n=2)
    assert top[top["user"] == "user_id"]["item"].tolist() == fallback["item"].tolist()
    assert top[top["user"] == str(big + 1)]["item"].tolist() == fallback["item"].tolist()


def test_recommendations_carry_titles_when_the_dataset_has_them(small_synthetic, tmp_path):
    titles = {str(i): f"Film {i}" for i in small_synthetic.item_ids}
    r = small_synthetic.__class__(**{**small_synthetic.__dict__, "extra": {"titles": titles}})
    cfg = RunConfig(data=DataConfig(dataset="unused"), model=ModelConfig.of("mf", rank=2),
                    rule=StoppingRule(gtol=1e-5, max_iter=30), optimizers=("lbfgs",))
    prep = experiment.prepare(cfg, r)
    res, _ = experiment.fit(prep, "lbfgs", cfg)
    from pipeline.recommender import Recommender
    rec = Recommender.load(Recommender.from_fit(prep.objective, res.x, r, prep.split.train).save(tmp_path / "m.npz"))
    top = rec.recommend([r.user_ids[0]], n=3)
    assert all(t == f"Film {i}" for t, i in zip(top["title"], top["item"]))


@pytest.mark.parametrize("model", sorted(__import__("pipeline.objectives", fromlist=["MODELS"]).MODELS))
def test_every_model_is_logged_served_and_reported_under_its_own_name(model, tmp_path, small_file, tracking_uri,
                                                                       monkeypatch):
    """For every registered model, with nothing but its registry line: `recsys compare --model M`
    logs each fit as a LoggedModel of the experiment (its metrics linked) that mlflow.pyfunc serves,
    `recsys recommend` ranks from it, and `recsys report` describes the model under its own name."""
    import mlflow
    from pipeline.objectives import model_spec
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    res = runner.invoke(cli, ["compare", "--dataset", str(small_file), "--model", model, "--optimizers", "lbfgs,gd",
                              "--max-passes", "60", "-q", "--data-dir", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    mlflow.set_tracking_uri(tracking_uri)
    exp = mlflow.get_experiment_by_name("small")
    logged = mlflow.search_logged_models(experiment_ids=[exp.experiment_id], output_format="list")
    assert sorted(m.name for m in logged) == [f"{model}-gd", f"{model}-lbfgs"]
    assert all(m.source_run_id and m.metrics for m in logged)  # linked to its run and its metrics
    served = mlflow.pyfunc.load_model(f"models:/{logged[0].model_id}")
    out = np.asarray(served.predict(pd.DataFrame({"user": [1, 2, 10**9], "item": [1, 3, 2]})))
    assert out.shape == (3,) and np.isfinite(out).all()
    res = runner.invoke(cli, ["recommend", "--model-uri", f"models:/{logged[0].model_id}", "--user", "1", "-n", "2"])
    assert res.exit_code == 0 and len(res.stdout.splitlines()) == 3, res.output
    res = runner.invoke(cli, ["report", "--out", str(tmp_path / "report")])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "report" / "report.md").read_text()
    spec = model_spec(model)
    assert f"# Case study: optimizers on {spec.title}" in text and spec.derivation.splitlines()[0] in text
    others = [s.title for name, s in __import__("pipeline.objectives", fromlist=["MODELS"]).MODELS.items()
              if name != model and s.title not in spec.title]
    assert not any(f"optimizers on {t}" in text for t in others)


def test_register_puts_the_best_fit_in_the_model_registry(tmp_path, small_file, tracking_uri, monkeypatch):
    import mlflow
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, ["compare", "--dataset", str(small_file), "--optimizers", "lbfgs,gd",
                                   "--max-passes", "40", "-q", "--register", "recsys-small",
                                   "--data-dir", str(tmp_path / "d")])
    assert res.exit_code == 0 and "registered as recsys-small version 1" in res.stdout, res.output
    mlflow.set_tracking_uri(tracking_uri)
    version = mlflow.MlflowClient().get_model_version("recsys-small", "1")
    best, uri = re.search(r"best model \(([\w-]+)\): recsys recommend --model-uri (\S+)", res.stdout).groups()
    model_id = uri.split("/")[-1]
    assert model_id in version.source and mlflow.get_logged_model(model_id).name == f"mf-{best}"
    served = mlflow.pyfunc.load_model("models:/recsys-small/1")
    assert np.isfinite(np.asarray(served.predict(pd.DataFrame({"user": [1], "item": [1]})))).all()
