"""What each dashboard page's first load costs in WASM, from a split release build's site: the
main module plus the chunks `__wasm_split_manifest.*.json` lists for the page, raw and as the
brotli files the server sends (`.br`, from `--precompress`).

    python3 scripts/wasm-sizes.py target/site/pkg
"""
import glob
import json
import os
import sys

pkg = sys.argv[1] if len(sys.argv) > 1 else "target/site/pkg"
(manifest,) = glob.glob(os.path.join(pkg, "__wasm_split_manifest.*.json"))
(main,) = [f for f in glob.glob(os.path.join(pkg, "stagely.*.wasm"))]
size = os.path.getsize
main_br = size(main + ".br")
print(f"main module: {size(main):,} B raw, {main_br:,} B brotli")
print("| page | its chunks, brotli | of which its own chunk | first load (main + chunks), brotli |")
print("| --- | --- | --- | --- |")
for route, chunks in sorted(json.load(open(manifest)).items()):
    files = [os.path.join(pkg, chunk + ".wasm.br") for chunk in chunks]
    total = sum(size(f) for f in files)
    own = sum(size(f) for f, c in zip(files, chunks) if c.startswith("split_"))
    print(f"| {route} | {total:,} B | {own:,} B | {main_br + total:,} B |")
