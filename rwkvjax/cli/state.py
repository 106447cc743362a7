"""`cli.py state list|show|fork|rm|export|import`: the named-state store, and RWKV-PEFT `time_state` files."""

from __future__ import annotations

import json

from rwkvjax.cli.flags import add_dataclass_args, dataclass_from_args
from rwkvjax.io import config as C

ACTIONS = {
    "list": (C.StateListConfig, "every state: name, id, parent, base model, created"),
    "show": (C.StateShowConfig, "one state's record and its lineage"),
    "fork": (C.StateForkConfig, "copy a state under a new name (the copy's parent is the source)"),
    "rm": (C.StateRmConfig, "remove a state"),
    "export": (C.StateExportConfig, "write a state as an RWKV-PEFT time_state file (RWKV-Runner, ai00)"),
    "import": (C.StateImportConfig, "read an RWKV-PEFT time_state file (or a model's merged time_state)"),
}


def add_arguments(p):
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, (cls, help_) in ACTIONS.items():
        add_dataclass_args(sub.add_parser(name, help=help_, description=help_), cls)


def run(args) -> None:
    from rwkvjax.io.states import StateStore
    cls = ACTIONS[args.action][0]
    cfg = dataclass_from_args(cls, args)
    store = StateStore(cfg.states, create=args.action == "import")
    if args.action == "list":
        recs = store.records()
        if cfg.json:
            print(json.dumps([r.to_json() for r in recs], indent=1))
        for r in [] if cfg.json else recs:
            print(f"{r.name}\t{r.id}\tparent={r.parent or '-'}\tbase={r.base_hash[:12]}\t{_when(r.created)}")
    elif args.action == "show":
        rec = store.get(cfg.name)
        print(json.dumps({**rec.to_json(), "lineage": [r.name for r in store.lineage(rec)],
                          "children": [r.name for r in store.children(rec)]}, indent=1))
    elif args.action == "fork":
        base = _model_hash(cfg.onto) if cfg.onto else None
        print(json.dumps(store.fork(cfg.src, cfg.name, base_hash=base).to_json(), indent=1))
    elif args.action == "rm":
        print(f"removed {store.remove(cfg.name).name}")
    elif args.action == "export":
        from rwkvjax.io.time_state import write_time_state
        rec = store.get(cfg.name)
        print(write_time_state(cfg.out, store.arrays(rec)["wkv"], cfg.dtype))
    else:
        print(json.dumps(import_state(store, cfg).to_json(), indent=1))


def import_state(store, cfg):
    from rwkvjax.errors import CheckpointMismatch
    from rwkvjax.io.formats import load
    from rwkvjax.io.time_state import read_time_state
    wkv = read_time_state(cfg.file)
    model = load(cfg.model)
    a = model.arch
    want = (a.n_layer, a.n_head, a.head_size, a.head_size)
    if wkv.shape != want:
        raise CheckpointMismatch(f"{cfg.file}: time_state has shape {wkv.shape}, model {cfg.model} needs {want}")
    parent = store.get(cfg.parent).id if cfg.parent else None
    return store.put(cfg.name, wkv, base_hash=model.hash, tokenizer=model.tokenizer_id,
                     parent=parent, source={"file": str(cfg.file)})


def _model_hash(model: str) -> str:
    from rwkvjax.io.formats import load
    return load(model).hash


def _when(t: float) -> str:
    import time
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
