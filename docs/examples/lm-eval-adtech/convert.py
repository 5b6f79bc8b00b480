"""Write adtech_mc.jsonl: the adtech suite's multiple-choice items (275) as lm-eval documents.

    python docs/examples/lm-eval-adtech/convert.py

Each line keeps the item's id, question, choices and the index of the right choice — the
fields adtech_mc.yaml reads (doc_to_text, doc_to_choice, doc_to_target).
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
ITEMS = HERE.parents[2] / "suites" / "data" / "adtech" / "items.jsonl"


def documents(items: Path = ITEMS) -> list[dict[str, object]]:
    rows = [json.loads(line) for line in items.read_text(encoding="utf-8").splitlines() if line]
    return [
        {"id": r["id"], "question": r["question"], "choices": r["choices"], "answer": r["answer"]}
        for r in rows
        if r["type"] == "multiple_choice"
    ]


def main() -> None:
    lines = [json.dumps(d, ensure_ascii=False) for d in documents()]
    (HERE / "adtech_mc.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} documents to {HERE / 'adtech_mc.jsonl'}")


if __name__ == "__main__":
    main()
