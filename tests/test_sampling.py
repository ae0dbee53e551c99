"""trl_grpo/models/sampling.py: one settings object and one rule for where a completion ends, for every generator."""

import pytest

from trl_grpo.models.sampling import Sampling, cut_at_end, end_ids


class _Tokenizer:
    eos_token_id = 2


class _Config:
    def __init__(self, eos):
        self.eos_token_id = eos


class _Model:
    def __init__(self, eos):
        self.generation_config = _Config(eos)


@pytest.mark.parametrize(
    "listed, expected",
    [(None, (2,)), (2, (2,)), (7, (2, 7)), ([7, 2], (2, 7)), ([151645, 151643], (2, 151643, 151645))],
)
def test_a_completion_ends_at_the_tokenizers_end_or_any_the_model_lists(listed, expected):
    """Qwen2.5-Instruct's generation config lists two end tokens; the tokenizer knows one."""
    assert end_ids(_Model(listed), _Tokenizer()) == expected


def test_the_generation_config_carries_every_knob_and_no_model_default():
    greedy = Sampling(16).generation_config(pad_id=0, end=(2, 7))
    assert not greedy.do_sample and greedy.max_new_tokens == 16 and greedy.eos_token_id == [2, 7]
    sampled = Sampling(16, 0.7, top_p=0.9, top_k=20, min_p=0.05, repetition_penalty=1.2, samples=4)
    config = sampled.generation_config(pad_id=0, end=(2,))
    assert config.do_sample and config.temperature == 0.7 and config.num_return_sequences == 4
    assert (config.top_p, config.top_k, config.min_p, config.repetition_penalty) == (0.9, 20, 0.05, 1.2)
    plain = Sampling(16, 0.7).generation_config(pad_id=0, end=(2,))
    assert (plain.top_k, plain.top_p) == (0, 1.0)  # not transformers' default top_k=50
    assert Sampling(16, 0.7).plain and not Sampling(16, 0.7, top_k=20).plain


def test_a_completion_is_cut_after_its_first_end_token():
    assert cut_at_end([5, 7, 9, 2], (2, 7)) == ([5, 7], True)
    assert cut_at_end([5, 9], (2, 7)) == ([5, 9], False)
    assert cut_at_end([], (2,)) == ([], False)


def test_the_settings_are_frozen():
    with pytest.raises(AttributeError):
        Sampling(16).temperature = 1.0
