"""The frozen base causal LM that is both encoder and decoder: loading it (`loading`), running a slice of its
layers (`layers`), and the LoRA adapters injected into it with an explicit choice of the active one (`adapters`)."""
