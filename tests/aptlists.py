"""A fixed set of apt package lists for the tests of `data.source: debian-packages` (imported by
the tests): the machine's own lists change with every `apt-get update`, and a test that trained
on them could predict differently tomorrow. Point DASKFLEET_APT_LISTS at `write_apt_lists(...)`.

The lists are Debian's format (Package, Section with an area prefix, Description with a long
part), generated with a fixed seed: 24 sections, each with words of its own among shared ones.
"""

from __future__ import annotations

import random
from pathlib import Path

SECTIONS = {
    "python": ["Python", "module", "python3", "bindings", "interpreter", "library"],
    "devel": ["compiler", "development", "GNU", "build", "toolchain", "debugger"],
    "doc": ["documentation", "HTML", "manual", "reference", "guide", "examples"],
    "libs": ["shared", "runtime", "libraries", "ABI", "linking", "symbols"],
    "utils": ["utility", "command", "terminal", "files", "tool", "shell"],
    "net": ["network", "server", "protocol", "daemon", "TCP", "proxy"],
    "admin": ["system", "administration", "configuration", "boot", "users", "services"],
    "games": ["game", "player", "levels", "puzzle", "arcade", "multiplayer"],
    "science": ["scientific", "physics", "chemistry", "simulation", "astronomy", "data"],
    "text": ["text", "editor", "formatting", "spelling", "dictionary", "fonts"],
    "graphics": ["image", "graphics", "drawing", "rendering", "pixels", "vector"],
    "sound": ["audio", "sound", "music", "player", "mixer", "codec"],
    "video": ["video", "movie", "streaming", "frames", "encoder", "subtitles"],
    "mail": ["mail", "email", "IMAP", "SMTP", "mailbox", "spam"],
    "web": ["web", "browser", "HTTP", "HTML5", "website", "javascript"],
    "database": ["database", "SQL", "queries", "tables", "PostgreSQL", "index"],
    "perl": ["Perl", "CPAN", "module", "perl5", "scripts", "regex"],
    "ruby": ["Ruby", "gem", "rails", "ruby3", "bundler", "rake"],
    "java": ["Java", "JVM", "jar", "classes", "Maven", "bytecode"],
    "kernel": ["kernel", "Linux", "modules", "drivers", "firmware", "headers"],
    "math": ["mathematics", "algebra", "equations", "numerical", "matrices", "statistics"],
    "x11": ["X11", "window", "desktop", "display", "Xorg", "fonts"],
    "fonts": ["font", "typeface", "glyphs", "TrueType", "OpenType", "family"],
    "electronics": ["electronics", "circuit", "PCB", "microcontroller", "signals", "Verilog"],
}
SHARED = ["package", "data", "files", "support", "the", "for", "and", "with", "common", "tools"]


def write_apt_lists(folder: Path, per_section: int = 400, seed: int = 11) -> Path:
    """Write the lists into ``folder`` (two files, as apt keeps one per archive area) and return
    it."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    stanzas: dict[str, list[str]] = {"main": [], "contrib": []}
    for section, words in SECTIONS.items():
        for i in range(per_section):
            summary = " ".join(rng.sample(words, 3) + rng.sample(SHARED, 3))
            area = "contrib" if i % 10 == 0 else "main"
            prefix = "contrib/" if area == "contrib" else ""
            stanzas[area].append(
                f"Package: {section}-pkg-{i}\nVersion: 1.{i}\nSection: {prefix}{section}\n"
                f"Description: {summary}\n {' '.join(rng.sample(words + SHARED, 8))}\n .\n"
                f" long part, which the corpus does not read\n")
    for area, entries in stanzas.items():
        (folder / f"deb.example.org_debian_dists_bookworm_{area}_binary-amd64_Packages").write_text(
            "\n".join(entries))
    return folder
