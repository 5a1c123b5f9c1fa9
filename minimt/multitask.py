"""MultiTaskModel: one shared BERT encoder, one small classification head per task.

    token ids ─► Packed ─► BertModel (N, H) ─► pooling (B, H) ─┬─► heads["topic"]     (B, C_topic)
                           (shared by every task)               └─► heads["sentiment"] (B, C_sentiment)

The pooled vector is the sentence embedding SentenceEncoder.encode returns (mean pooling, L2-normalised for
all-MiniLM-L6-v2), so a head sees exactly the embedding a user would compute. Each task's loss trains its own
head and, through the shared encoder, every other task's features too.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from minimt.devices import pick_device
from minimt.encoder import Compiled, SentenceEncoder, check_texts, embed_sorted, eval_mode, read_dir
from minimt.errors import UserError, UserTypeError
from minimt.io import checkpoint, download, export, layout
from minimt.pooling import normalize
from minimt.tokenizer import MAX_TOKENS


HEADS = ("linear", "mlp")


def check_head(kind):
    if kind not in HEADS:
        raise UserError(f"head {kind!r} is not known; use one of {HEADS}")


def check_task_name(name, where="task"):
    """Task names become module names (heads.<task>) and JSON keys: Python identifiers only."""
    if not isinstance(name, str) or not name.isidentifier():
        raise UserError(f"{where}: task name {name!r} must be a Python identifier (letters, digits, _)")


class Head(nn.Module):
    """linear: Dropout -> Linear.  mlp: Linear -> GELU -> Dropout -> Linear (one hidden layer of width H)."""

    def __init__(self, dim, n_labels, kind="linear", dropout=0.1):
        super().__init__()
        check_head(kind)
        self.hidden = nn.Linear(dim, dim) if kind == "mlp" else None
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(dim, n_labels)

    def forward(self, x):                        # x: (B, H)
        if self.hidden is not None:
            x = F.gelu(self.hidden(x))           # (B, H)
        return self.out(self.drop(x))            # (B, C) logits


class MultiTaskModel(nn.Module):
    def __init__(self, encoder, tasks, head="linear", dropout=0.1, device=None):
        """encoder: a SentenceEncoder (its BertModel and tokenizer are shared, not copied);
        tasks: {"topic": ["books", "dvd", ...], "sentiment": ["negative", "positive"]}, any number of tasks (none:
        the encoder alone, trained by pairs / contrastive tasks, minimt/objectives.py);
        device: where the whole model goes ("cpu", "cuda", "auto", ...; default: the encoder's)."""
        super().__init__()
        if not isinstance(tasks, dict):  # {} is allowed: no heads, when only pair tasks train the encoder
            raise UserError("tasks must be a dict {task name: [label, ...]}")
        check_head(head)
        for name, labels in tasks.items():
            check_task_name(name)
            if len(labels) < 2 or len(set(labels)) != len(labels):
                raise UserError(f"task {name!r} needs at least 2 distinct labels, got {list(labels)}")
        self.bert = encoder.model      # the BertModel (model.py); a SentenceEncoder wraps the same one for encode()
        self.tokenizer = encoder.tokenizer
        self.config = encoder.config
        self.tasks = {name: [str(x) for x in labels] for name, labels in tasks.items()}
        self.head_kind, self.dropout = head, dropout
        self.heads = nn.ModuleDict({name: Head(self.config.hidden_size, len(labels), head, dropout)
                                    for name, labels in self.tasks.items()})
        self.to(pick_device(device) if device is not None else self.device)  # the heads join the encoder
        self.compiled = None  # compile(): the encoder's forward through torch.compile

    def compile(self):
        """Train and predict through torch.compile from now on: the encoder's padded forward and pooling, forward
        and backward (AOTAutograd), compiled by inductor; the heads and losses stay eager. The first step compiles
        (about a minute for MiniLM), and each new mix of train/eval mode and frozen blocks compiles once more, so
        it pays over a long run with a fixed freezing plan (TrainConfig.compile; docs/performance.md). If
        compiling fails, one line says so and training goes on eagerly. Replaces nn.Module.compile, which would
        trace the per-run Python loop of the packed layout."""
        self.compiled = Compiled(self.bert, self.tokenizer, freezing=False)
        return self

    @property
    def device(self):
        return self.bert.embeddings.word.weight.device

    def units(self):
        """The blocks that freeze and unfreeze as a whole: embeddings, each layer, each head."""
        return ([("embeddings", self.bert.embeddings)]
                + [(f"layer.{i}", layer) for i, layer in enumerate(self.bert.layers)]
                + [(f"head.{name}", h) for name, h in self.heads.items()])

    def backbone_frozen(self):
        return not any(p.requires_grad for p in self.bert.parameters())

    def train(self, mode=True):
        # freeze.py's contract: a frozen block runs in eval mode, its dropout would only add noise to features it
        # cannot adapt to. model.train() is called after every evaluation, so this is where that is kept.
        super().train(mode)
        if mode:
            for _, unit in self.units():
                if not any(p.requires_grad for p in unit.parameters()):
                    unit.eval()
        return self

    def forward(self, ids):
        """Token-id lists (any order) -> their sentence embeddings (B, H), in the same order: what
        SentenceEncoder.encode returns, with gradients as any forward (none under no_grad)."""
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # Packed wants the longest first
        # a frozen backbone learns nothing: skip autograd's bookkeeping for the encoder (the heads still get it)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.backbone_frozen()):
            sorted_ids = [ids[i] for i in order]
            pooled = (self.compiled(sorted_ids) if self.compiled is not None    # (B, H) in `order`
                      else embed_sorted(self.bert, sorted_ids))
        pooled = pooled[torch.argsort(torch.tensor(order, device=pooled.device))]  # (B, H) in the caller's order
        return normalize(pooled) if self.config.normalize else pooled

    def classify(self, vectors):
        """The heads: (B, H) sentence embeddings -> {task: (B, C_task) logits}."""
        return {name: head(vectors) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, texts, batch_size=None, max_tokens=MAX_TOKENS):
        """[{task: (label, probability)}, ...], one dict per text, in input order."""
        if isinstance(texts, str):
            raise UserTypeError("predict() takes a list of texts; wrap a single text as [text]")
        ids = self.tokenizer.encode(check_texts(texts))
        out = [None] * len(ids)
        with eval_mode(self):
            for idx, batch in self.tokenizer.token_batches(ids, max_tokens, batch_size):
                logits = self.classify(self(batch))
                probs = {t: lg.float().softmax(-1) for t, lg in logits.items()}           # (b, C_t) each
                for row, i in enumerate(idx):
                    out[i] = {t: (self.tasks[t][int(p[row].argmax())], float(p[row].max())) for t, p in probs.items()}
        return out

    def save(self, path):
        """A sentence-transformers directory of the encoder, with the heads beside it (minimt/io/export.py)."""
        return export.save_sentence_transformer(self.bert, self.tokenizer, path, multitask=self)

    @classmethod
    def from_checkpoint(cls, path):
        """A training checkpoint (runs/train/best) or a directory written by save() / `minimt export`, every
        tensor checked (strict)."""
        kind = layout.kind(path)
        if kind == "checkpoint":  # checkpoint.read finds and checks its own files
            bert, tokenizer, state, meta = checkpoint.read(path)
            model = cls(SentenceEncoder(bert, tokenizer), meta["tasks"], head=meta["head"], dropout=meta["dropout"])
            model.load_state_dict(state, strict=True)
        elif kind == "export":
            path = download.locate(path)  # every file checked against export.json (or an interrupted export's copy)
            meta, heads = export.read_heads(path)
            bert, tokenizer = read_dir(path)
            model = cls(SentenceEncoder(bert.eval(), tokenizer), meta["tasks"], meta["head"], meta["dropout"])
            model.heads.load_state_dict(heads, strict=True)
        else:
            raise UserError(f"{path} is a {kind} directory with no task heads; load it with "
                            f"SentenceEncoder.from_pretrained, or train heads on it (minimt train)")
        return model.eval()


class EmbeddingCache:
    """text -> sentence embedding, each distinct text encoded once. While the backbone is frozen its output for
    a text never changes, so heads-only training can run on these vectors instead of the encoder every step."""

    @torch.no_grad()
    def __init__(self, model, texts, max_tokens=MAX_TOKENS):
        if not model.backbone_frozen():
            raise UserError("an embedding cache needs the whole backbone frozen: its vectors would go stale")
        texts = sorted(set(texts))
        self.row = {t: i for i, t in enumerate(texts)}
        self.vectors = torch.empty(len(texts), model.config.hidden_size, device=model.device)  # (N, H)
        with eval_mode(model):
            for idx, batch in model.tokenizer.token_batches(model.tokenizer.encode(texts), max_tokens):
                self.vectors[idx] = model(batch).float()

    def __call__(self, examples):
        return self.vectors[[self.row[ex.text] for ex in examples]]  # (B, H), on the model's device
