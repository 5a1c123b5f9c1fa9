"""The datasets minimt uses, where each comes from, and fetching them into data/ (never committed to git).

Every file comes from a public GitHub repository at a pinned commit (a branch can change under us, a commit
cannot), read from raw.githubusercontent.com; or, when MINIMT_DATA_MIRROR is set, from a mirror with the layout
of data/ itself, <mirror>/<dataset>/<file>, as a local directory or an http(s) URL. Two files are not byte copies of
their public file and get a small, explicit change after download from the public source (never from a mirror,
which holds the final bytes): trec/train_5500.label is re-encoded from Latin-1 to UTF-8, and the women's clothing
CSV is taken out of the zip the repository holds.

Whatever the source, a file takes its place only when its sha256 is the registered one: it is written to a hidden
temporary file beside its destination, checked, synced and then renamed, so an interrupted or wrong download never
leaves anything that looks complete. A second fetch finds the files and downloads nothing.

The registry below is the provenance of each file (repository, commit, original path, size, sha256) as recorded
when the datasets were first collected; readers find a file with path(dataset, file).
"""
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from minimt.errors import UserError
from minimt.io import download, files

RAW = "https://raw.githubusercontent.com"  # GitHub's plain file server: <RAW>/<owner>/<repo>/<commit>/<path>
MIRROR = "MINIMT_DATA_MIRROR"
TIMEOUT = 60      # seconds without an answer before a download is given up
BLOCK = 1 << 20   # bytes per read: a file is streamed, never held in memory whole


@dataclass(frozen=True)
class File:
    """One file of a dataset: its name in data/<dataset>/, its public copy, and the sha256 of its final bytes."""
    name: str                # file name in data/<dataset>/ and in a mirror
    repo: str                # GitHub owner/name holding the public copy
    commit: str              # the pinned commit
    path: str                # the public copy's path in that repository (often another name)
    sha256: str              # of the final file, checked whatever the source
    size: int                # bytes of the final file
    member: str = ""         # the public copy is a zip: the final file is this member of it
    encoding: str = ""       # the public copy is text in this encoding: the final file is the same text in UTF-8
    public_sha256: str = ""  # of the public copy itself, checked before `member` or `encoding` change it

    @property
    def url(self):
        return f"{RAW}/{self.repo}/{self.commit}/{quote(self.path)}"


@dataclass(frozen=True)
class Dataset:
    files: tuple   # of File
    licence: str   # as found with the data, in short
    used_by: str   # what in this repository reads it


STS = ("zhangzhenhu/Semantic-Texual-Similarity-Toolkits", "c55a72f51bd15a8bd75114247c06984b432050f9")
AUTOPROMPT = ("eyalbd2/Reproducing-AutoPrompt", "6288fb5bec9c572f2492875ae0111df5b6daed11")
# the first commit: later ones replaced test.csv and train.csv with tiny modified versions
CHARCNN = ("Shane-Neeley/CharCnn_Keras", "03c2f3cce18acc7a73a8aa38f687d4dc00db8f87")
ALPS = ("forest-snow/alps", "43232f234087cdbb4b06cd0e3997460610a0dbfd")  # data/ was removed after this commit
CLOTHING = ("irmakozveren01/Womens-clothing-text-analysis", "18e084eca89ca3f0fe66ee29933876c2e8b909af")
QNN = ("FreedomIntelligence/qnn", "77f549372d4371e7f2d52e77bc18df5096dd4779")

DATASETS = {
    "stsb": Dataset((  # STS benchmark (Cer et al. 2017): sentence pairs scored 0-5 by people
        File("sts-train.csv", *STS, "data/stsbenchmark/sts-train.csv",
             "0f71910b59aa1ad973c5897f0791f3b0965a92b8f82b1a95f3eea9f4162fda82", 901177),
        File("sts-dev.csv", *STS, "data/stsbenchmark/sts-dev.csv",
             "5d7e944d8b02734b07bfdb5df67db3420c64bed153fcaa1ba47ad03480cf4234", 255680),
        File("sts-test.csv", *STS, "data/stsbenchmark/sts-test.csv",
             "affe45928a66ee5a708531233c95b7dacbbdc57f974f002a3d32ea0180cf816a", 282419),
        File("LICENSE.txt", *STS, "data/stsbenchmark/LICENSE.txt",
             "3dfc3217395f8c5dd05c5f8995f25fe2f8fd258e6dd770b3de480749caee8c70", 6641),
        File("readme.txt", *STS, "data/stsbenchmark/readme.txt",
             "e9488363d211c32ca5e912954f16eb9233cfed1b5b4b0475d0d812d35d7c8ef1", 5994)),
        licence="scores CC BY-SA 4.0; each text source its own (LICENSE.txt)",
        used_by="`python -m minimt sts`, examples/05_study.py, tests/test_similarity.py, tests/test_encoder.py, "
                "tests/interop.py, tests/bench/"),
    # Blitzer et al. 2007 (books, dvd, electronics, kitchen) + airline reviews; each test-labeled.tsv holds all
    # 2,000 labelled reviews of its domain (the repository's train/dev files are subsets of it)
    "multi_domain_sentiment": Dataset(tuple(
        File(f"{domain}.tsv", *AUTOPROMPT, f"blitzer_data/{domain}/test-labeled.tsv", sha256, size)
        for domain, sha256, size in [
            ("books", "25b1b0c7c6e2bae5a1ca919c34314850757da748461750ec19d166432ee3de42", 2070420),
            ("dvd", "3cef8a48464cf974f28a6f7aa771d6a8b5213f6bf1cd8faa8e8c78c94b2e25af", 1962956),
            ("electronics", "cc90f5e61ec8ed78a9a27ba6d7564f3bf95e000948b6c7e3d1340db555e263ce", 1260415),
            ("kitchen", "1fd02351a57f081aa05505303a488e7c820d9fd2cd27e9407439f3d8013dbd02", 1054949),
            ("airline", "d74e018e19f2cdff2529b1d038c9fa76f1fdd92e95f7e82653637c3c14483b11", 1262756)]),
        licence="none stated (Amazon and airline reviews; research use)",
        used_by="examples/train_multidomain.json (04_train.py, 05_study.py), tests/test_data.py, tests/bench/"),
    "sst2": Dataset((  # GLUE SST-2; the repository's train.tsv is a 1,000-row sample, train_full.tsv the real one
        File("train.tsv", *AUTOPROMPT, "glue_data/SST-2/train_full.tsv",
             "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1", 3806081),
        File("dev.tsv", *AUTOPROMPT, "glue_data/SST-2/dev.tsv",
             "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0", 94931)),
        licence="none stated (Stanford Sentiment Treebank via GLUE)",
        used_by="examples/05_study.py"),
    "ag_news": Dataset((  # the official test split, and 10,001 rows of the train split (description only)
        File("test.csv", *CHARCNN, "data/ag_news_csv/test.csv",
             "521465c2428ed7f02f8d6db6ffdd4b5447c1c701962353eb2c40d548c3c85699", 1857427),
        File("classes.txt", *CHARCNN, "data/ag_news_csv/classes.txt",
             "612dbfa932f07a6ed837295a7d5746ce7412e7bb4bc32ba919fdb3cda3a1b9b5", 31),
        File("readme.txt", *CHARCNN, "data/ag_news_csv/readme.txt",
             "779c2e6bbf93dd810d9c7b318006daef7a4bfc34062002461d251dc10fb9f58c", 1795),
        File("train_sample_10k_alps.tsv", *ALPS, "data/agnews/dev.tsv",
             "7a0811e0006080bf4de17752c5466450ff3db778be71bc5bcf3c4e99b5f0803d", 2030410)),
        licence="non-commercial research use (readme.txt)",
        used_by="examples/05_study.py (train_sample_10k_alps.tsv)"),
    "womens_clothing_reviews": Dataset((  # Kaggle nicapotato/womens-ecommerce-clothing-reviews, version 1
        File("womens_clothing_ecommerce_reviews.csv", *CLOTHING, "Womens Clothing E-Commerce Reviews.csv.zip",
             "bd93cc515747ad1f87b8bc863c9e40da758509e6db6506a96d06976e61e36ee0", 8483448,
             member="Womens Clothing E-Commerce Reviews.csv"),),
        licence="CC0 (Kaggle page)",
        used_by="examples/05_study.py"),
    "trec": Dataset((  # Li & Roth 2002 question classification
        File("train_5500.label", *QNN, "data/TREC/train_5500.label",
             "3260eca2159e978f0941932e7c541dec9aa504c2573c91fe770707f9038f8236", 333380, encoding="latin-1",
             public_sha256="8bd6e79493f43bbd22c364587366a1dced54e1e31259eaa92721a0f526031116"),
        File("TREC_10.label", *QNN, "data/TREC/TREC_10.label",
             "86ad53c8fc9d397ab2f4be7c967d8efb470b260140557d3e57afad69d1b88b76", 23269)),
        licence="none stated (UIUC, free for research)",
        used_by="nothing yet (a question-type task to add)"),
}


def how_to_fetch(dataset=""):
    """The sentence a missing-file error ends with."""
    if dataset in DATASETS:
        return f"fetch it with `make data` or `python -m minimt data {dataset}`"
    return "fetch the datasets with `make data` or `python -m minimt data`"


def path(dataset, file, data_dir=None):
    """data/<dataset>/<file> (or under data_dir); FileNotFoundError, saying how to fetch it, if it is not there."""
    p = Path(data_dir or download.home("data")) / dataset / file
    if not p.is_file():
        raise FileNotFoundError(f"{p} is missing; {how_to_fetch(dataset)}")
    return p


def fetch(names=None, log=download.log):
    """Put the named datasets (None = all) into data/<dataset>/<file>, sha256-checked; return the data directory."""
    everything = names is None
    names = list(DATASETS) if everything else [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        raise UserError(f"unknown dataset {', '.join(map(repr, unknown))}; the known ones are {', '.join(DATASETS)}")
    home, mirror = download.home("data"), os.environ.get(MIRROR, "")
    if mirror and not (_is_url(mirror) or Path(mirror).is_dir()):
        raise UserError(f"{MIRROR}={mirror} is neither a directory nor an http(s) URL; point it at a copy of "
                        f"data/ (<dataset>/<file>), or unset it to download from the public sources")
    where = f"the mirror {mirror} ({MIRROR})" if mirror else f"public GitHub repositories at pinned commits ({RAW})"
    log(f"fetching {'every dataset' if everything else ', '.join(names)} into {home}\n  from {where}")
    for name in names:
        present = 0
        for f in DATASETS[name].files:
            dest = home / name / f.name
            if dest.is_file() and download.sha256_of(dest) == f.sha256:
                present += 1
                continue
            if dest.exists():  # damaged or edited: the registered bytes replace it (only once they are verified)
                log(f"  {name}/{f.name} has the wrong sha256; fetching it again")
            changed = _fetch_file(name, f, dest, mirror)
            log(f"  {name}/{f.name}  {f.size:,} bytes, sha256 ok{changed}")
        if present:
            log(f"  {name}: {present} of {len(DATASETS[name].files)} files already there, sha256 ok")
    return home


def _fetch_file(name, f, dest, mirror):
    """Download (or copy) one file to a temporary name beside dest, check it, then rename it into place.
    Returns what was done to the public copy, if anything, for the log line."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    files.clear_stale(dest, ("part", "public"))  # what a fetch that was killed left (its process is gone)
    part = dest.with_name(f".{f.name}.part-{os.getpid()}")
    public = dest.with_name(f".{f.name}.public-{os.getpid()}")  # the public copy, before member/encoding
    changed = ""
    try:
        if mirror:  # a mirror holds the final bytes
            source = (f"{mirror.rstrip('/')}/{quote(name)}/{quote(f.name)}" if _is_url(mirror)
                      else str(Path(mirror) / name / f.name))
            _copy(source, part, name, f, mirror)
        elif f.member or f.encoding:
            source = f.url
            _copy(source, public, name, f, mirror)
            if f.public_sha256:
                _check(public, f.public_sha256, None, f"{name}/{f.name}: the public copy", source)
            _transform(f, public, part, source)
            changed = (f" (taken out of {f.path})" if f.member else f" (converted from {f.encoding} to UTF-8)")
        else:
            source = f.url
            _copy(source, part, name, f, mirror)
        _check(part, f.sha256, f.size, f"{name}/{f.name}", source)
        with open(part, "rb") as fh:
            os.fsync(fh.fileno())  # the bytes are on disk before the name says the file is complete
        os.replace(part, dest)
        return changed
    finally:  # any failure, Ctrl-C included: no partial file stays behind
        part.unlink(missing_ok=True)
        public.unlink(missing_ok=True)


def _copy(source, out, name, f, mirror):
    """source (a URL or a local path) -> the file out, streamed in blocks; one clear error if it does not answer."""
    fix = (f"set {MIRROR} to a directory or http(s) URL holding {name}/{f.name}"
           + (f" (it is {mirror}), or unset it to download from the public sources" if mirror
              else ", or connect to the internet"))
    try:
        if _is_url(source):
            src = urllib.request.urlopen(source, timeout=TIMEOUT)
        else:
            src = open(source, "rb")
        with src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, BLOCK)
    except urllib.error.HTTPError as e:
        raise UserError(f"could not download {name}/{f.name} from {source} (HTTP Error {e.code}: {e.reason}): "
                        f"{fix}") from None
    except urllib.error.URLError as e:
        raise UserError(f"could not download {name}/{f.name} from {source} ({e.reason}): {fix}") from None
    except FileNotFoundError as e:
        if e.filename != source:  # not the mirror's file but our own destination: a different problem
            raise
        raise UserError(f"could not copy {name}/{f.name}: {source} does not exist: {fix}") from None
    except (TimeoutError, ConnectionError) as e:  # a stalled or cut connection in the middle of the body
        raise UserError(f"could not download {name}/{f.name} from {source} ({type(e).__name__}: {e}): "
                        f"{fix}") from None


def _transform(f, public, out, source):
    """The public copy -> the final file: a zip member taken out, or text re-encoded to UTF-8."""
    try:
        if f.member:
            with zipfile.ZipFile(public) as z, z.open(f.member) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, BLOCK)
        else:  # a small text file: read whole
            out.write_bytes(public.read_bytes().decode(f.encoding).encode("utf-8"))
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError) as e:
        raise UserError(f"{f.name}: the public copy {source} is not the registered file ({type(e).__name__}: "
                        f"{e}), so nothing was kept") from None


def _is_url(source):
    return source.startswith(("http://", "https://"))


def _check(file, sha256, size, what, source):
    got = download.sha256_of(file)
    if got != sha256:
        expected = f"{size:,} bytes, sha256 {sha256}" if size else f"sha256 {sha256}"
        raise UserError(f"{what} from {source} has {file.stat().st_size:,} bytes, sha256 {got}; expected "
                        f"{expected}. It is not the registered file, so nothing was kept")
