"""`cli.py state list|show|fork|rm|export|import`: the named-state store, and RWKV-PEFT `time_state` files."""

from __future__ import annotations

import argparse
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


class _NamesParser(argparse.ArgumentParser):
    """A state subcommand's parser that takes `-`-leading words as state names. Per-project states are named
    after Claude Code's project folders (`-home-me-proj`), which argparse would read as unknown options (or as
    `-h`): a word that starts with one '-', is not one of the subcommand's options and is not an option's value
    is a positional; the value of an option that takes one may start with '-' too (`--name -home-me-proj`)."""

    def parse_known_args(self, args=None, namespace=None):
        import sys
        return super().parse_known_args(self._names_as_positionals(sys.argv[1:] if args is None else list(args)),
                                         namespace)

    def _names_as_positionals(self, args: list[str]) -> list[str]:
        if not self._get_positional_actions():
            return args  # nothing to take a name: argparse reports a stray word itself
        options, positionals, moved, i = [], [], False, 0
        while i < len(args):
            a = args[i]
            if a == "--":
                positionals.extend(args[i + 1:])
                break
            action = self._option_action(a)
            if action is not None:
                takes_one = action.nargs is None or action.nargs == 1
                if takes_one and a.startswith("--") and "=" not in a and i + 1 < len(args):
                    options.append(f"{a}={args[i + 1]}")  # '=' keeps a '-'-leading value a value
                    moved |= args[i + 1].startswith("-")
                    i += 2
                    continue
                options.append(a)
            elif a.startswith("--"):
                options.append(a)  # an unknown long option: argparse reports it
            else:
                positionals.append(a)
                moved |= a.startswith("-")
            i += 1
        if not moved:
            return args  # nothing '-'-leading to protect: argparse reads the words as given
        # after '--' every word is a positional, in the order given
        return [*options, "--", *positionals]

    def _option_action(self, word: str):
        """The action of an option word (exact, `--opt=value`, or an unambiguous prefix of a long option)."""
        if not word.startswith("-") or word == "-":
            return None
        flag = word.split("=", 1)[0] if word.startswith("--") else word
        if flag in self._option_string_actions:
            return self._option_string_actions[flag]
        if flag.startswith("--"):
            hits = [o for o in self._option_string_actions if o.startswith(flag)]
            if len(hits) == 1:
                return self._option_string_actions[hits[0]]
        return None


def add_arguments(p):
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=_NamesParser)
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
        for r in store.remove(cfg.name, recursive=cfg.recursive):
            print(f"removed {r.name}")
    elif args.action == "export":
        from rwkvjax.io.time_state import write_time_state
        rec = store.get(cfg.name)
        print(write_time_state(cfg.out, store.arrays(rec)["wkv"], cfg.dtype))
    else:
        print(json.dumps(import_state(store, cfg).to_json(), indent=1))


def import_state(store, cfg):
    from rwkvjax.errors import CheckpointMismatch
    from rwkvjax.io.formats import load
    from rwkvjax.io.states import check_name
    from rwkvjax.io.time_state import read_time_state, time_state_shape
    # everything that can be checked without the model, before it is loaded (seconds) and before any tensor is
    # read: a file's header may claim layers or shapes that would take gigabytes to build
    check_name(cfg.name)
    have = time_state_shape(cfg.file)
    model = load(cfg.model)
    a = model.arch
    want = (a.n_layer, a.n_head, a.head_size, a.head_size)
    if have is not None and have != want:
        raise CheckpointMismatch(f"{cfg.file}: time_state has shape {have}, model {cfg.model} needs {want}")
    wkv = read_time_state(cfg.file, expect_LHNN=want)  # other formats: checked against `want` before stacking
    parent = store.get(cfg.parent).id if cfg.parent else None
    return store.put(cfg.name, wkv, base_hash=model.hash, tokenizer=model.tokenizer_id,
                     parent=parent, source={"file": str(cfg.file)})


def _model_hash(model: str) -> str:
    from rwkvjax.io.formats import load
    return load(model).hash


def _when(t: float) -> str:
    import time
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
