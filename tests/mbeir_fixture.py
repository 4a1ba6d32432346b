"""A tiny M-BEIR-format dataset with the format's quirks, written by the tests into a temp folder.

Quirks covered: 5-column qrels; null fields (not missing keys); src_content as a JSON *string*;
MSCOCO's ``_test_cand_pool`` file names; an OVEN query whose positives include an InfoSeek did
(``6:…``) that is not in OVEN's local pool; duplicate content under distinct dids; an image-only
query; image+text queries; the real instruction TSV rows of these tasks.
"""

from __future__ import annotations

import json
from pathlib import Path

INSTRUCTIONS = (
    "query_modality\tcand_modality\tdataset_name\tdataset_id\tprompt_1\tprompt_2\tprompt_3\tprompt_4\n"
    "text\timage\tMSCOCO\t9\tFind me an everyday image that matches the given caption.\t"
    "Identify the image showcasing the described everyday scene.\tI want you to retrieve an image of this daily life description.\t"
    "Show me an image that best captures the following common scene description.\n"
    "image\ttext\tMSCOCO\t9\tFind an image caption describing the following everyday image.\t"
    "Retrieve the caption for the displayed day-to-day image.\tCan you find a caption talking about this daily life image?\t"
    "I want to locate the caption that best describes this everyday scene image.\n"
    "image,text\ttext\tOVEN\t5\tRetrieve a Wikipedia paragraph that provides an answer to the given query about the image.\t"
    "Determine the Wikipedia snippet that identifies the visual entity in the image.\t"
    "I want to find a paragraph from Wikipedia that answers my question about this image.\t"
    "You have to find a Wikipedia segment that identifies this image's subject."
)

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30),
           "white": (250, 250, 250)}


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def _image(root: Path, rel: str, colour: tuple[int, int, int]) -> str:
    from PIL import Image, ImageDraw

    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", (64, 48), colour)
    ImageDraw.Draw(im).rectangle([8, 8, 30, 30], fill=(255 - colour[0], 255 - colour[1], 255 - colour[2]))
    im.save(path, format="JPEG", quality=90)
    return rel


def build_fixture(root: Path) -> Path:
    """Write the fixture under ``root`` and return ``root``."""
    img = "mbeir_images/mscoco_images/val2014/COCO_val2014_{:012d}.jpg"
    names = list(COLOURS)
    paths = [_image(root, img.format(i + 1), COLOURS[n]) for i, n in enumerate(names)]
    # MSCOCO task 0 pool: images 9:1..9:5, plus 9:6 duplicating 9:1's content under another did.
    pool0 = [{"txt": None, "img_path": p, "modality": "image", "did": f"9:{i + 1}", "src_content": None}
             for i, p in enumerate(paths)]
    pool0.append({"txt": None, "img_path": paths[0], "modality": "image", "did": "9:6", "src_content": None})
    # MSCOCO task 3 pool: captions 9:7..9:11 (normalisation exercised: no final period, quotes, \r).
    captions = ['a red square on a dark background', '"A green picture."', "a blue photo\r",
                "A yellow image!", "a white image?"]
    pool3 = [{"txt": c, "img_path": None, "modality": "text", "did": f"9:{i + 7}", "src_content": None}
             for i, c in enumerate(captions)]
    q0 = [{"qid": f"9:{i + 1}", "query_txt": f"a {n} picture", "query_img_path": None, "query_modality": "text",
           "query_src_content": None, "pos_cand_list": [f"9:{i + 1}"], "neg_cand_list": [], "task_id": 0}
          for i, n in enumerate(names)]
    q3 = [{"qid": f"9:{i + 11}", "query_txt": None, "query_img_path": p, "query_modality": "image",
           "query_src_content": None, "pos_cand_list": [f"9:{i + 7}"], "neg_cand_list": [], "task_id": 3}
          for i, p in enumerate(paths)]
    oven_img = _image(root, "mbeir_images/oven_images/00/oven_00000001.jpg", COLOURS["red"])
    pool6 = [{"txt": "Red (colour). Red is the colour at the long-wavelength end of the visible spectrum.",
              "img_path": None, "modality": "text", "did": "5:1",
              "src_content": json.dumps({"wikidata_id": "Q3142", "wikipedia_title": "Red"})},
             {"txt": "Blue (colour). Blue is one of the three primary colours.", "img_path": None,
              "modality": "text", "did": "5:2",
              "src_content": json.dumps({"wikidata_id": "Q1088", "wikipedia_title": "Blue"})}]
    q6 = [{"qid": "5:1", "query_txt": "what colour is this?", "query_img_path": oven_img,
           "query_modality": "image,text",
           "query_src_content": json.dumps({"data_id": "oven_00000001", "entity_id": "Q3142", "data_split": "test"}),
           "pos_cand_list": ["5:1", "6:17"], "neg_cand_list": [], "task_id": 6}]
    _write_jsonl(root / "query/test/mbeir_mscoco_task0_test.jsonl", q0)
    _write_jsonl(root / "query/test/mbeir_mscoco_task3_test.jsonl", q3)
    _write_jsonl(root / "query/test/mbeir_oven_task6_test.jsonl", q6)
    _write_jsonl(root / "cand_pool/local/mbeir_mscoco_task0_test_cand_pool.jsonl", pool0)
    _write_jsonl(root / "cand_pool/local/mbeir_mscoco_task3_test_cand_pool.jsonl", pool3)
    _write_jsonl(root / "cand_pool/local/mbeir_oven_task6_cand_pool.jsonl", pool6)
    qrels = root / "qrels/test"
    qrels.mkdir(parents=True, exist_ok=True)
    # MSCOCO t->i: query 9:1 ("red") has both the red image and its duplicate as positives.
    lines0 = [f"9:{i + 1} 0 9:{i + 1} 1 0" for i in range(5)] + ["9:1 0 9:6 1 0"]
    (qrels / "mbeir_mscoco_task0_test_qrels.txt").write_text("\n".join(lines0) + "\n")
    (qrels / "mbeir_mscoco_task3_test_qrels.txt").write_text(
        "\n".join(f"9:{i + 11} 0 9:{i + 7} 1 3" for i in range(5)) + "\n")
    (qrels / "mbeir_oven_task6_test_qrels.txt").write_text("5:1 0 5:1 1 6\n5:1 0 6:17 1 6\n")
    (root / "instructions").mkdir(exist_ok=True)
    (root / "instructions/query_instructions.tsv").write_text(INSTRUCTIONS, encoding="utf-8")
    return root
