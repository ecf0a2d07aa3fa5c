"""`layerconf fuzz`: generated scenarios through the one runner, failures shrunk and written out.

- `names.py`    — names, values and YAML-ready forms shared by the generators (pure)
- `compare.py`  — Compare cases: lower trees and valid upper op sequences (Hypothesis strategies)
- `tars.py`     — Apply cases: random tars, byte-level mutations, compression framings (pure)
- `engine.py`   — the loop: generate, run through `runner.run_scenario`, shrink, write YAML
"""
