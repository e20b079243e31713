"""transformers `generate`, batched: the CPU backend of tests and `make demo`, and a GPU fallback."""

from __future__ import annotations


class HFGenerator:
    def __init__(self, model_path: str, sampling, device: str | None = None, trust_remote_code: bool = False,
                 revision: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, GenerationConfig

        from nemo_recipes.tokenizer import load_tokenizer

        self.sampling = sampling
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = load_tokenizer(model_path, trust_remote_code=trust_remote_code, revision=revision)
        self.tokenizer.padding_side = "left"  # decoder-only batches pad on the left so generation starts aligned
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, revision=revision,
                                                          trust_remote_code=trust_remote_code).to(self.device)
        self.model.eval()
        # transformers fills every setting generate() is not given from the model's generation_config.json (a
        # hub model's may set repetition_penalty or top_k); vLLM given SamplingParams takes none of them. Sample with
        # exactly the configured settings, as vLLM does.
        self.model.generation_config = GenerationConfig()
        vocab = self.tokenizer.get_vocab()
        # Stop strings that are single tokens (<|im_end|>, <|endoftext|>) become stop token ids: exact and cheap.
        self.stop_ids = [vocab[s] for s in sampling.stop if s in vocab]
        self.stop_strings = [s for s in sampling.stop if s not in vocab]
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.stop_ids[0]

    def generate(self, requests: list[dict]) -> list[dict]:
        """Generate for `requests` in batches. transformers samples a batch from one generator, so the first
        request's seed seeds the whole call: reproducible per chunk, not per sample as in vLLM."""
        import torch

        torch.manual_seed(requests[0]["seed"])
        results = []
        size = self.sampling.batch_size
        for start in range(0, len(requests), size):
            results += self._generate_batch([r["prompt"] for r in requests[start:start + size]])
        return results

    def _generate_batch(self, prompts: list[str]) -> list[dict]:
        import torch

        s = self.sampling
        inputs = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        sample = s.temperature > 0
        with torch.no_grad():
            output = self.model.generate(
                **inputs,
                do_sample=sample,
                temperature=s.temperature if sample else None,
                top_p=s.top_p if sample else None,
                top_k=s.top_k if sample and s.top_k > 0 else None,
                max_new_tokens=s.max_tokens,
                eos_token_id=self.stop_ids or None,
                stop_strings=self.stop_strings or None,
                tokenizer=self.tokenizer if self.stop_strings else None,
                pad_token_id=self.pad_id,
            )
        new_tokens = output[:, inputs["input_ids"].shape[1]:].tolist()
        return [self._result(tokens) for tokens in new_tokens]

    def _result(self, tokens: list[int]) -> dict:
        stop_at = next((i for i, t in enumerate(tokens) if t in self.stop_ids), None)
        kept = tokens if stop_at is None else tokens[:stop_at]
        text = self.tokenizer.decode(kept, skip_special_tokens=False)
        finish = "length" if stop_at is None else "stop"
        for stop in self.stop_strings:
            if stop in text:
                text, finish = text[: text.index(stop)], "stop"
        # Counted as vLLM counts: the stop token it generated is one of its tokens, not part of the text.
        return {"generation": text, "num_generated_tokens": len(kept) + (stop_at is not None),
                "finish_reason": finish}

    def close(self) -> None:
        del self.model


def open_generator(model_path: str, sampling, **options) -> HFGenerator:
    return HFGenerator(model_path, sampling, **options)
