"""`nft -j list ruleset` output -> the same Ruleset as the text listing (noderules.nft).

Rules come as expression trees (libnftables' JSON schema, nft(8) JSON); they are printed back as
the text nft would list, then canonicalised like a text listing, so either form of a node's dump
compares with testbed's render. Expressions kube-proxy does not write are printed as compact JSON:
they still compare (equal to themselves), they just do not read as nft text.
"""
from __future__ import annotations

import json
from typing import Any

from testbed.errors import TestbedError
from testbed.noderules import nft

# meta keys nft lists without the `meta` word.
_BARE_META = {"iif", "oif", "iifname", "oifname", "iiftype", "oiftype", "iifgroup", "oifgroup",
              "skuid", "skgid", "rtclassid", "ibrname", "obrname", "ibriport", "obriport"}
_VERDICTS = ("accept", "drop", "continue", "return", "queue")


def _expr(e: Any) -> str:
    if isinstance(e, bool):
        return "true" if e else "false"
    if isinstance(e, (int, float, str)):
        return str(e)
    if isinstance(e, list):  # a set of ct states, flags, …
        return ",".join(_expr(x) for x in e)
    if not isinstance(e, dict) or len(e) != 1:
        return json.dumps(e, separators=(",", ":"), sort_keys=True)
    (kind, v), = e.items()
    if kind == "payload":
        if "protocol" in v:
            return f"{v['protocol']} {v['field']}"
        return f"@{v.get('base')},{v.get('offset')},{v.get('len')}"
    if kind == "meta":
        return v["key"] if v["key"] in _BARE_META else f"meta {v['key']}"
    if kind == "ct":
        return f"ct {v['key']}"
    if kind == "concat":
        return " . ".join(_expr(x) for x in v)
    if kind == "set":
        return "{ " + ", ".join(_elem(x) for x in (v if isinstance(v, list) else [v])) + " }"
    if kind == "prefix":
        return f"{_expr(v['addr'])}/{v['len']}"
    if kind == "range":
        return f"{_expr(v[0])}-{_expr(v[1])}"
    if kind == "numgen":
        off = f" offset {v['offset']}" if v.get("offset") else ""
        return f"numgen {v['mode']} mod {v['mod']}{off}"
    if kind == "fib":
        flags = v.get("flags", [])
        flags = [flags] if isinstance(flags, str) else flags
        return f"fib {' . '.join(flags)} {v['result']}"
    if kind in ("|", "&", "^", "<<", ">>"):
        return f"{_expr(v[0])} {kind} {_expr(v[1])}"
    if kind in ("vmap", "map"):
        return f"{_expr(v['key'])} {kind} {_expr(v['data'])}"
    if kind == "elem":
        return _elem(e)
    if kind in ("jump", "goto"):
        return f"{kind} {v['target']}"
    if kind in _VERDICTS:
        return kind
    return json.dumps(e, separators=(",", ":"), sort_keys=True)


def _elem(x: Any) -> str:
    """A set element or a map's [key, value] pair: `KEY [comment "C"] [: VALUE]`."""
    if isinstance(x, list) and len(x) == 2:
        return f"{_elem(x[0])} : {_expr(x[1])}"
    if isinstance(x, dict) and "elem" in x:
        el = x["elem"]
        out = _expr(el["val"])
        if el.get("comment") is not None:
            out += f" comment {json.dumps(el['comment'])}"
        return out
    return _expr(x)


def _stmt(s: dict) -> str:
    if not isinstance(s, dict) or len(s) != 1:
        return json.dumps(s, separators=(",", ":"), sort_keys=True)
    (kind, v), = s.items()
    if kind == "match":
        op = v["op"]
        right = _expr(v["right"])
        if op == "in":  # `ct state new`, flags: nft lists the bare value
            return f"{_expr(v['left'])} {right}"
        return f"{_expr(v['left'])} {'' if op == '==' and not _is_binop(v['left']) else op + ' '}{right}"
    if kind == "counter":
        return "counter"
    if kind == "mangle":
        return f"{_expr(v['key'])} set {_expr(v['value'])}"
    if kind in ("dnat", "snat"):
        to = _expr(v["addr"]) if "addr" in v else ""
        if "port" in v:
            to += f":{_expr(v['port'])}"
        flags = v.get("flags")
        flags = " " + ",".join(flags if isinstance(flags, list) else [flags]) if flags else ""
        return f"{kind} to {to}{flags}".rstrip()
    if kind in ("masquerade", "redirect"):
        flags = (v or {}).get("flags")
        if flags:
            return f"{kind} {','.join(flags if isinstance(flags, list) else [flags])}"
        return kind
    if kind == "reject":
        if not v:
            return "reject"
        expr = v.get("expr")
        return f"reject with {v.get('type', 'icmp')} {expr}" if expr else f"reject with {v.get('type')}"
    if kind == "set":
        return f"{v['op']} {v['set']} {{ {_expr(v['elem'])} }}"
    if kind == "log":
        return "log" + "".join(f" {k} {json.dumps(x) if k == 'prefix' else x}" for k, x in (v or {}).items())
    if kind == "notrack":
        return "notrack"
    return _expr(s)


def _is_binop(e: Any) -> bool:
    return isinstance(e, dict) and len(e) == 1 and next(iter(e)) in ("|", "&", "^", "<<", ">>")


def rule_text(expr: list, comment: str | None = None) -> str:
    """A rule's `expr` list (and comment) as nft lists it, canonical."""
    text = " ".join(_stmt(s) for s in expr)
    if comment is not None:
        text += f" comment {json.dumps(comment)}"
    return nft.canonical(text)


def _set_type(t: Any) -> str:
    return " . ".join(t) if isinstance(t, list) else str(t)


def parse(text: str, source: str = "<rules>") -> nft.Ruleset:
    """`nft -j list ruleset` output -> Ruleset."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise TestbedError(f"{source}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    items = data.get("nftables") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise TestbedError(f"{source}: expected `nft -j list ruleset` output: an object with an \"nftables\" list")
    out = nft.Ruleset()
    rules: list[tuple[int, dict]] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or len(item) != 1:
            raise TestbedError(f"{source}: nftables[{i}]: expected one object such as {{\"table\": …}}")
        (kind, v), = item.items()
        if kind == "metainfo":
            continue
        try:
            if kind == "table":
                t = out.table(v["family"], v["name"])
                t.comment = v.get("comment", t.comment)
            elif kind == "chain":
                t = out.table(v["family"], v["table"])
                chain = t.chains.setdefault(v["name"], nft.Chain(v["name"]))
                if "hook" in v:
                    chain.hook = (v["type"], v["hook"], int(v["prio"]), v.get("policy", "accept"))
                chain.comment = v.get("comment")
            elif kind in ("set", "map"):
                t = out.table(v["family"], v["table"])
                type_ = _set_type(v["type"]) + (f" : {_set_type(v['map'])}" if kind == "map" else "")
                flags = v.get("flags", [])
                flags = tuple(sorted(f for f in ([flags] if isinstance(flags, str) else flags) if f != "dynamic"))
                spec = (type_, flags, v.get("timeout"), v.get("comment"))
                t.sets[v["name"]] = nft.Set(v["name"], kind, spec, [nft.canonical(_elem(x)) for x in v.get("elem", [])])
            elif kind == "rule":
                rules.append((i, v))
            else:
                fam, tname = v.get("family"), v.get("table")
                if fam and tname:
                    out.table(fam, tname).other.append(f"{kind} {v.get('name', '')}".strip())
        except (KeyError, TypeError, ValueError) as e:
            raise TestbedError(f"{source}: nftables[{i}] ({kind}): missing or bad field {e}") from None
    for i, v in rules:  # rules may come before their chain in hand-made files
        try:
            t = out.table(v["family"], v["table"])
            chain = t.chains.setdefault(v["chain"], nft.Chain(v["chain"]))
            chain.rules.append(rule_text(v["expr"], v.get("comment")))
        except (KeyError, TypeError) as e:
            raise TestbedError(f"{source}: nftables[{i}] (rule): missing or bad field {e}") from None
    return out
