"""Texts written without spaces (Chinese, Japanese): the job classifies them as scikit-learn's own
character n-grams do, and a user who does not know about analyzers is not silently failed."""

from __future__ import annotations

import random
import textwrap

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import f1_score

from runner.batch import load_job, load_model, predict_texts, prepare_dataset, run_job
from runner.batch import split as row_split
from runner.batch.text import clean_texts

# words of each topic and filler words, written as the languages write them: no spaces
TOPICS = {
    "zh": {
        "sports": "足球 篮球 比赛 运动员 教练 进球 冠军 球队 联赛 训练 体育场 奥运会 游泳 裁判 球迷 决赛",
        "cooking": "厨房 米饭 面条 炒菜 鸡蛋 食谱 味道 调料 蔬菜 牛肉 烤箱 汤锅 酱油 饺子 早餐 甜点",
        "music": "音乐 歌手 钢琴 吉他 乐队 旋律 演唱会 专辑 歌曲 节奏 鼓手 小提琴 作曲 合唱 唱片 歌词",
        "tech": "电脑 手机 软件 程序 网络 数据 芯片 算法 服务器 互联网 编程 系统 代码 屏幕 键盘 硬件",
        "travel": "旅游 机场 酒店 护照 火车 景点 行李 海滩 导游 签证 航班 地图 门票 背包 游客 度假",
    },
    "ja": {
        "sports": "サッカー 野球 試合 選手 監督 得点 優勝 チーム リーグ 練習 競技場 審判 決勝 走る",
        "cooking": "料理 ご飯 味噌汁 卵 レシピ 味付け 野菜 牛肉 オーブン 醤油 餃子 朝ご飯 焼く 台所",
        "music": "音楽 歌手 ピアノ ギター バンド 旋律 コンサート アルバム 歌う リズム 作曲 合唱 歌詞",
        "tech": "パソコン 携帯 ソフト プログラム ネットワーク データ 半導体 計算 サーバー 画面 開発",
    },
}
FILLER = {
    "zh": "我们 今天 他们 非常 已经 因为 所以 但是 还是 这个 那个 一些 可以 觉得 时候 朋友",
    "ja": "私は 今日 とても もう だから でも この その たくさん 思います 時に 友達 昨日 です ました",
}
PUNCT = {"zh": "，。！？、", "ja": "、。！？"}


def unspaced_rows(language: str, n: int, seed: int = 7, noise: float = 0.1) -> pd.DataFrame:
    """Documents of 3 topic words and 6 filler words in sentences of 3-5 words, no spaces
    between words, the language's punctuation between sentences; ``noise`` of the labels
    redrawn, so the task has an accuracy to compare below 1."""
    rng = random.Random(seed)
    topics = {label: words.split() for label, words in TOPICS[language].items()}
    filler, labels = FILLER[language].split(), list(topics)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        words = rng.choices(topics[label], k=3) + rng.choices(filler, k=6)
        rng.shuffle(words)
        text, k = "", 0
        while k < len(words):
            m = rng.randint(3, 5)
            text += "".join(words[k:k + m]) + rng.choice(PUNCT[language])
            k += m
        rows.append({"text": text, "label": rng.choice(labels) if rng.random() < noise else label})
    return pd.DataFrame(rows)


def run(client, folder, tmp_path, name: str, rows: pd.DataFrame, extra: str = ""):
    rows.to_csv(folder / f"{name}.csv", index=False)
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: {name}
        data: {{source: files, path: {name}.csv, shard_rows: 500}}
        features: {{n_features: 65536}}
        """) + textwrap.dedent(extra))
    job = load_job(path)
    dataset = prepare_dataset(job, tmp_path / "cache")
    lines: list[str] = []
    metrics = run_job(client, job, [str(p) for p in dataset.paths], tmp_path / "runs" / name,
                      progress=lines.append)
    return job, metrics, lines


def sklearn_macro_f1(job, rows: pd.DataFrame) -> float:
    """scikit-learn's own char n-gram HashingVectorizer + SGDClassifier in one process, on the
    job's split (the same hash of the same cleaned texts)."""
    split = job.split_params()
    is_test = row_split.test_mask(clean_texts(rows["text"], job.clean_params()), split["test_fraction"],
                        split["seed"])
    vec = HashingVectorizer(analyzer="char_wb", ngram_range=(1, 3), n_features=65536,
                            alternate_sign=False)
    X, y = vec.transform(rows["text"]), rows["label"].to_numpy()
    clf = SGDClassifier(alpha=1e-5, random_state=0).fit(X[~is_test], y[~is_test])
    return f1_score(y[is_test], clf.predict(X[is_test]), average="macro")


@pytest.mark.parametrize("language", ["zh", "ja"])
def test_unspaced_text_classifies_as_sklearn_char_ngrams_do(client, tmp_path, language):
    rows = unspaced_rows(language, 3000)
    job, metrics, lines = run(client, tmp_path, tmp_path, f"auto-{language}", rows)
    # nobody set features.analyzer: the texts' script chose characters, and the log says so
    assert metrics["params"]["features"]["analyzer"] == "char_wb"
    assert metrics["params"]["features"]["ngram_range"] == [1, 3]
    assert any(line.startswith("note: features.analyzer auto: 100% of the texts are written "
                               "without spaces") for line in lines), lines
    reference = sklearn_macro_f1(job, rows)
    assert reference > 0.8  # the task is learnable from characters
    assert metrics["macro_f1"] >= reference - 0.02, (metrics["macro_f1"], reference)


def test_words_on_unspaced_text_are_warned_about_and_fail_as_warned(client, tmp_path):
    rows = unspaced_rows("zh", 3000)
    _, words, _ = run(client, tmp_path, tmp_path, "word-zh", rows, "features: {analyzer: word, "
                      "n_features: 65536}\n")
    # whole sentences as words: near chance (5 labels, 10 % noise), which is what the warning says
    assert words["macro_f1"] < 0.5
    assert any("each sentence is one word" in w for w in words["warnings"]), words.get("warnings")


def test_spaced_text_keeps_words_and_the_model_predicts_unspaced_input(client, tmp_path):
    english = pd.DataFrame({"text": [f"match goal team striker number{i}" if i % 2 else
                                     f"recipe oven flour garlic number{i}" for i in range(600)],
                            "label": ["sports" if i % 2 else "cooking" for i in range(600)]})
    _, metrics, lines = run(client, tmp_path, tmp_path, "auto-en", english)
    assert metrics["params"]["features"]["analyzer"] == "word"
    assert metrics["params"]["features"]["ngram_range"] == [1, 2]
    assert not any(line.startswith("note: features.analyzer") for line in lines)
    # a saved char_wb model cleans and hashes new text as the training did
    rows = unspaced_rows("zh", 1500, seed=11, noise=0.0)
    _, metrics, _ = run(client, tmp_path, tmp_path, "predict-zh", rows)
    model = load_model(tmp_path / "runs" / "predict-zh")
    assert model["vectorizer"]["analyzer"] == "char_wb"
    texts = ["今天我们的球队在决赛进球了。", "他们觉得这个钢琴旋律非常好。"]
    assert predict_texts(model, texts) == ["sports", "music"]
    assert np.isclose(metrics["accuracy"], 1.0, atol=0.02)
