"""Soft tokens + text -> answers: `prompt` (laying out the decoder's input), `generate` (generation and
streaming), `extractive` (answers constrained to quote the documents)."""
