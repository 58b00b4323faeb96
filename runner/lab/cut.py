"""`lab cut`: a host's (or the control machine's) network cut and healed, with an nftables
table of its own. Never the emulated EC2's security-group table
(runner.lab.security_groups.SG_TABLE): healing must not open what a group closes."""

from __future__ import annotations

from runner.lab.addresses import CUT_TABLE
from runner.lab.machine import BRIDGE

__all__ = ["CUT_TABLE", "control_cut_ruleset", "cut_ruleset", "has_cut_table"]


def cut_ruleset() -> str:
    """The `lab cut` table: input and output dropped but for loopback, ahead of every other
    table's chains (a drop anywhere is final in nftables). Declared, deleted and defined in one
    `nft -f` transaction, so cutting a cut host is a no-op."""
    return "\n".join([
        f"table inet {CUT_TABLE}",
        f"delete table inet {CUT_TABLE}",
        f"table inet {CUT_TABLE} {{",
        "  chain input {",
        "    type filter hook input priority -400; policy drop;",
        '    iif "lo" accept',
        "  }",
        "  chain output {",
        "    type filter hook output priority -400; policy drop;",
        '    oif "lo" accept',
        "  }",
        "}",
        "",
    ])


def control_cut_ruleset() -> str:
    """`lab cut control`: the control machine's own link to the lab (its address on the bridge)
    cut, in the machine's namespace. Only packets to and from this machine's stack: traffic
    between the hosts is bridged, never seen by these hooks, so the cluster runs on."""
    return "\n".join([
        f"table inet {CUT_TABLE}",
        f"delete table inet {CUT_TABLE}",
        f"table inet {CUT_TABLE} {{",
        "  chain input {",
        "    type filter hook input priority -400;",
        f'    iifname "{BRIDGE}" drop',
        "  }",
        "  chain output {",
        "    type filter hook output priority -400;",
        f'    oifname "{BRIDGE}" drop',
        "  }",
        "}",
        "",
    ])


def has_cut_table(nft_list_tables: str) -> bool:
    """Whether `nft list tables` output names the cut table."""
    return f"table inet {CUT_TABLE}" in {line.strip() for line in nft_list_tables.splitlines()}
