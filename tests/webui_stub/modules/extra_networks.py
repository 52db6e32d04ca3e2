"""Stand-in for modules/extra_networks.py (A1111 v1.10.1): processing activates the prompt's `<lora:name:weight>`
networks on every pass, whatever p.scripts holds; `activated` records (prompt, networks) for tests."""
import re

activated = []   # stand-in only


def parse_prompt(prompt: str):
    """{network type: [names]} of the prompt's <type:name:…> tags."""
    found = {}
    for kind, name in re.findall(r"<(\w+):([^:>]+)[^>]*>", prompt):
        found.setdefault(kind, []).append(name)
    return found


def activate(p, extra_network_data):
    activated.append((p.prompt, extra_network_data))
