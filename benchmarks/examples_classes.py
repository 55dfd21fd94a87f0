"""How often a class logit's dataset examples are photos of that class, from an ``examples.json``.

    python benchmarks/examples_classes.py outputs/dataset_examples/<time>/examples.json

For each unit of the logits layer (the 20 classes of ``experiment=dataset_examples``) it prints the
class, the label of its top photo and how many of its top k photos carry the class's label; then how
many classes have a top-1 photo of their own class, and the mean precision of the top k.
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("examples", help="an examples.json")
    ap.add_argument("--layer", default="logits")
    args = ap.parse_args()
    doc = json.load(open(args.examples))
    names = doc["dataset"]["label_names"] or []
    units = doc["layers"][args.layer]["units"]
    name = lambda i: names[i] if i is not None and 0 <= i < len(names) else str(i)  # noqa: E731
    top1, hits = 0, []
    print(f"{'class':<22} {'top-1 photo':<22} top-{doc['k']} of its class")
    for u, row in units.items():
        own = sum(lb == int(u) for lb in row["labels"])
        top1 += row["labels"][0] == int(u)
        hits.append(own / len(row["labels"]))
        print(f"{name(int(u)):<22} {name(row['labels'][0]):<22} {own}/{len(row['labels'])}")
    print(f"\ntop-1 photo of its own class: {top1} of {len(units)} classes; "
          f"top-{doc['k']} precision {sum(hits) / len(hits):.2f} (over {doc['dataset']['seen']} photos)")


if __name__ == "__main__":
    main()
