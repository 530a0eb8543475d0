"""Text -> soft tokens, one stage a file in the order data flows: `segment` (token ids -> encoder batches),
`encode` (the first k layers + LoRA), `merge` (group merging), `align` (layer semantic alignment), and
`compressor`, which composes them."""
