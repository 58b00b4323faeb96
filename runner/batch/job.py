"""The job file: one validated pydantic model per section, defaults written once; the data
section's model is in runner.batch.job_data.

Control side only (imports pydantic and yaml); nothing here is shipped to workers. The pipeline
turns a JobSpec into plain dicts (``clean_params``, ``vectorizer_params``, ...) before it builds
any task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from runner.batch.job_data import DataSpec, _Model
from runner.batch.store_urls import check_options, is_store_url
from runner.errors import BatchError, ConfigError
from runner.spec_errors import KeyProblem, format_validation_error


class CleanSpec(_Model):
    """Cleaning steps, in this order: Unicode NFKC, HTML tags and entities, lowercase, URLs,
    e-mail addresses, stand-alone numbers, punctuation, stop words, short tokens."""

    unicode_nfkc: bool = True
    strip_html: bool = False
    lowercase: bool = True
    strip_urls: bool = True
    strip_emails: bool = False
    strip_numbers: bool = False
    strip_punctuation: bool = True
    stop_words: Literal["english"] | list[str] | None = "english"
    min_token_len: Annotated[int, Field(ge=1)] = 2
    # Snowball stemming (snowballstemmer), e.g. "english"; None: no stemming
    stem: str | None = None

    @field_validator("stem")
    @classmethod
    def _known_language(cls, value: str | None) -> str | None:
        if value is None:
            return None
        import snowballstemmer

        if value not in snowballstemmer.algorithms():
            raise ValueError(f"unknown stemming language {value!r} (use one of: "
                             f"{', '.join(sorted(snowballstemmer.algorithms()))})")
        return value


ANALYZERS = ("auto", "word", "char", "char_wb")


class FeatureSpec(_Model):
    n_features: int = 2**18
    # scikit-learn's analyzers: word n-grams of the cleaned tokens, or character n-grams (char_wb:
    # inside each token). auto: word, unless most texts are in a script written without spaces
    # (Chinese, Japanese, Thai...), where a whole sentence would be one word: then char_wb
    analyzer: Literal["auto", "word", "char", "char_wb"] = "auto"
    # [min_n, max_n]; by default [1, 2] for words and [1, 3] for characters
    ngram_range: list[int] | None = None
    alternate_sign: bool = False
    norm: Literal["l1", "l2"] | None = "l2"
    # TF-IDF weights, document frequencies counted over all partitions' training rows
    tfidf: bool = False
    # true: the feature matrices stay on the workers for all epochs and the evaluation (fast,
    # worker memory grows with the corpus); false: every pass re-reads, cleans and hashes its
    # shard inside the task and keeps nothing (flat worker memory, a re-read per pass)
    cache: bool = True

    @field_validator("n_features")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        # the hashed feature table: a power of two between 2**4 and 2**24 (64 MB of float32
        # coefficients per class on every worker at the top)
        if value < 16 or value > 2**24 or value & (value - 1):
            raise ValueError(f"must be a power of two from 16 to 16777216 (2**24), got {value}; "
                             "e.g. 262144 (2**18)")
        return value

    @field_validator("ngram_range")
    @classmethod
    def _ngrams(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return None
        if len(value) != 2 or not 1 <= value[0] <= value[1]:
            raise ValueError("must be [min_n, max_n] with 1 <= min_n <= max_n, e.g. [1, 2]")
        return value


class SplitSpec(_Model):
    test_fraction: Annotated[float, Field(gt=0, lt=1, description=(
        "the share of rows held out for testing: above 0 and below 1, e.g. 0.2"))] = 0.2
    seed: int = 0
    # every label of at most 1000 rows gets test_fraction of its rows as test rows (at least
    # one; a one-row label trains); false: the plain hash split, where a rare label may land
    # wholly on one side
    stratify: bool = True


MODEL_KINDS = ("sgd", "naive_bayes", "incremental")
DEFAULT_ALPHA = {"sgd": 1e-5, "incremental": 1e-5, "naive_bayes": 1.0}
SEARCH_KEYS = {"sgd": ("alpha", "loss"), "naive_bayes": ("alpha",)}
SGD_LOSSES = ("hinge", "log_loss", "modified_huber", "squared_hinge", "perceptron")


class ModelSpec(_Model):
    """``sgd``: parallel SGD by parameter mixing; ``naive_bayes``: exact complement (default) or
    multinomial naive Bayes from class-feature counts summed over the partitions; ``incremental``: dask-ml's
    Incremental(SGDClassifier), one sequential pass over the partitions per epoch (the baseline).

    ``alpha``: the SGD regularisation, or the naive-Bayes smoothing (defaults 1e-5 and 1.0).
    """

    kind: Literal["sgd", "naive_bayes", "incremental"] = "sgd"
    variant: Literal["multinomial", "complement"] | None = None
    epochs: Annotated[int, Field(ge=1, le=1000)] = 5
    alpha: Annotated[float | None, Field(gt=0)] = None
    # hinge with alpha 1e-5 had the best accuracy and macro-F1 on the Debian corpus
    # (bench/accuracy.py; modified_huber and log_loss within 0.01-0.03 of it)
    loss: Literal["hinge", "log_loss", "modified_huber", "squared_hinge", "perceptron"] = "hinge"
    seed: int = 0
    # scikit-learn's SGDClassifier schedule, under the same names and defaults
    learning_rate: Literal["optimal", "constant", "invscaling", "adaptive"] = "optimal"
    eta0: Annotated[float, Field(gt=0)] = 0.01
    power_t: float = 0.5
    # "balanced": n_rows / (n_classes x rows of the class), from the training split's counts; or
    # label -> weight (labels not named weigh 1)
    class_weight: Literal["balanced"] | dict[str, Annotated[float, Field(gt=0)]] | None = None
    # averaged SGD (ASGD), scikit-learn's name: true averages the weights from the first row,
    # N from the N-th row seen; the average is taken after every batch of partial_fit (at least
    # parts.BATCH_ROWS rows), not every row
    average: bool | Annotated[int, Field(ge=1)] = False

    @model_validator(mode="after")
    def _average_only_for_sgd(self) -> ModelSpec:
        if self.average is not False and self.kind != "sgd":
            why = ("naive Bayes has no weights to average" if self.kind == "naive_bayes" else
                   "incremental trains with scikit-learn's own partial_fit, whose average mixes "
                   "up the plain and averaged intercepts of more than two classes (scikit-learn "
                   "1.9); use kind: sgd")
            raise KeyProblem("average", f"only allowed when kind is 'sgd' ({why})")
        return self

    @model_validator(mode="after")
    def _variant_only_for_bayes(self) -> ModelSpec:
        if self.variant is not None and self.kind != "naive_bayes":
            raise KeyProblem("variant", f"only allowed when kind is 'naive_bayes' (kind is {self.kind!r})")
        return self

    @model_validator(mode="after")
    def _schedule_only_for_sgd(self) -> ModelSpec:
        if self.kind == "naive_bayes":
            for key, default in (("learning_rate", "optimal"), ("eta0", 0.01),
                                 ("power_t", 0.5), ("class_weight", None)):
                if getattr(self, key) != default:
                    raise KeyProblem(key, "only allowed when kind is 'sgd' or 'incremental' "
                                         "(naive Bayes has no learning rate or class weights)")
        return self

    @property
    def alpha_value(self) -> float:
        return DEFAULT_ALPHA[self.kind] if self.alpha is None else self.alpha

    @property
    def variant_value(self) -> str:
        # complement: on Debian sections (l2-normalised hashed features) accuracy 0.698 and
        # macro-F1 0.628, against 0.492 / 0.240 for multinomial, whose class priors swamp
        # the small normalised counts (measured single-process, same features and split)
        return self.variant or "complement"


class SearchSpec(_Model):
    """A small grid evaluated in parallel on a validation split carved from the training rows."""

    grid: dict[str, list[Any]]
    validation_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    max_candidates: Annotated[int, Field(ge=1, le=64)] = 16

    @field_validator("grid", mode="after")
    @classmethod
    def _grid_values(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if not grid:
            raise ValueError("must name at least one parameter, e.g. {alpha: [1e-5, 1e-4]}")
        for key, values in grid.items():
            if not values:
                raise KeyProblem(key, "needs at least one value")
            if key == "alpha":
                bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int | float)
                       or v <= 0]
                if bad:
                    raise KeyProblem(key, f"values must be numbers > 0, got {bad!r}")
            elif key == "loss":
                bad = [v for v in values if v not in SGD_LOSSES]
                if bad:
                    raise KeyProblem(key, f"unknown loss {bad!r} (use: {', '.join(SGD_LOSSES)})")
            else:
                raise KeyProblem(key, "unknown parameter (searchable: alpha, loss)")
        return grid

    def candidates(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{}]
        for key, values in self.grid.items():
            out = [{**c, key: v} for c in out for v in values]
        return out


class ResultsSpec(_Model):
    """Where a copy of each run folder goes: ``<path>/<run-id>/`` in an object store (``s3://``)
    or on a filesystem every node mounts (``file://``); ``storage_options`` as data's (the
    submitting shell's AWS variables fill in what it does not name)."""

    path: Annotated[str, Field(description="s3://bucket/prefix or file:///shared/folder")]
    storage_options: dict[str, Any] | None = None

    @property
    def path_url(self) -> str:
        return self.path.rstrip("/")

    @model_validator(mode="after")
    def _a_store_url(self) -> ResultsSpec:
        parts = urlsplit(self.path)
        if not is_store_url(self.path) or (parts.scheme == "s3" and not parts.netloc):
            raise KeyProblem("path", f"{self.path!r} is not an object-store or shared-filesystem "
                            "URL; use s3://bucket/prefix or file:///shared/folder")
        try:
            check_options(self.storage_options)
        except BatchError as e:
            raise KeyProblem("storage_options", str(e).split(": ", 1)[1]) from None
        return self


class JobSpec(_Model):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=80,
                               description="letters, digits, '.', '_' and '-', e.g. name: my-job")]
    data: Annotated[DataSpec, Field(description=(
        "where the documents come from, e.g. data: {source: files, path: corpus.csv}"))]
    clean: CleanSpec = CleanSpec()
    features: FeatureSpec = FeatureSpec()
    split: SplitSpec = SplitSpec()
    model: ModelSpec = ModelSpec()
    search: SearchSpec | None = None
    results: ResultsSpec | None = None

    @model_validator(mode="after")
    def _consistent(self) -> JobSpec:
        if self.model.kind == "naive_bayes" and self.features.alternate_sign:
            raise KeyProblem("features.alternate_sign", "must be false for model.kind naive_bayes "
                            "(naive Bayes needs non-negative feature counts)")
        if not self.features.cache:
            if self.model.kind == "incremental":
                raise KeyProblem("features.cache", "false is not supported for model.kind "
                                "incremental (use sgd or naive_bayes, or features.cache: true)")
            if self.search is not None:
                raise KeyProblem("features.cache", "false is not supported with a search "
                                "section (remove search, or set features.cache: true)")
        if self.search is not None:
            allowed = SEARCH_KEYS.get(self.model.kind)
            if allowed is None:
                raise KeyProblem("search", f"not available for model.kind {self.model.kind!r} "
                                "(use sgd or naive_bayes)")
            extra = [k for k in self.search.grid if k not in allowed]
            if extra:
                raise KeyProblem("search.grid", f"{', '.join(extra)} cannot be searched for "
                                f"model.kind {self.model.kind!r} (searchable: {', '.join(allowed)})")
            n = len(self.search.candidates())
            if n > self.search.max_candidates:
                raise KeyProblem("search.grid", f"{n} combinations, more than "
                                f"search.max_candidates ({self.search.max_candidates})")
        return self

    # plain dicts for the worker-side functions (they never see pydantic objects)
    def clean_params(self) -> dict[str, Any]:
        return self.clean.model_dump(mode="python")

    def vectorizer_params(self) -> dict[str, Any]:
        return self.features.model_dump(mode="python")

    def split_params(self) -> dict[str, Any]:
        return self.split.model_dump(mode="python")

    def sgd_params(self) -> dict[str, Any]:
        """scikit-learn's SGDClassifier parameters of the model section (``class_weight`` aside:
        ``balanced`` is computed from the training split's counts by the pipeline)."""
        m = self.model
        return {"loss": m.loss, "alpha": m.alpha_value, "random_state": m.seed,
                "learning_rate": m.learning_rate, "eta0": m.eta0, "power_t": m.power_t,
                "average": m.average}

    def model_params(self) -> dict[str, Any]:
        """The model section with the defaults resolved (plain dict for the worker side)."""
        return {**self.model.model_dump(mode="python"), "alpha": self.model.alpha_value,
                "variant": self.model.variant_value if self.model.kind == "naive_bayes" else None}


def load_job(path: str | Path, check_paths: bool = True) -> JobSpec:
    """Read and validate a job file; any problem is one ConfigError naming the file and key.
    ``check_paths=False``: data.path need not exist here (a detached run's driver, on the
    scheduler's host, runs over the shards the submitting machine prepared and shipped)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: job file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read job file: {e}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{path}: not valid YAML{line}: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: a job file must be a YAML mapping with at least 'name' and 'data', "
            f"got {type(raw).__name__}"
        )
    try:
        return JobSpec.model_validate(raw, context={"base_dir": path.resolve().parent,
                                                    "check_paths": check_paths})
    except ValidationError as e:
        raise ConfigError(format_validation_error(path, e, JobSpec)) from None
