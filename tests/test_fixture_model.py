import json

from tokenizers import Tokenizer

from pytest_llama4.deploy.fixture_model import VOCAB_SIZE, ensure_model_dir


def test_model_dir_is_built_once_and_cached(tmp_path):
    first = ensure_model_dir(tmp_path)
    stamp = (first / "tokenizer.json").stat().st_mtime_ns
    assert ensure_model_dir(tmp_path) == first
    assert (first / "tokenizer.json").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name], "no staging directory is left behind"


def test_tokenizer_decodes_the_ids_the_mocker_emits(tmp_path):
    """The mocker emits ids from about 1000 to beyond 2000: every one must decode to a word."""
    tokenizer = Tokenizer.from_file(str(ensure_model_dir(tmp_path) / "tokenizer.json"))
    assert tokenizer.get_vocab_size() == VOCAB_SIZE
    for token_id in (1000, 1500, 2000, 20_000, VOCAB_SIZE - 1):
        assert tokenizer.id_to_token(token_id).isalpha()
    text = tokenizer.decode(list(range(1000, 1010)))
    assert len(text.split()) == 10


def test_config_is_llama_with_a_llama4_chat_template(tmp_path):
    model = ensure_model_dir(tmp_path)
    config = json.loads((model / "config.json").read_text())
    assert config["model_type"] == "llama" and config["vocab_size"] == VOCAB_SIZE
    template = json.loads((model / "tokenizer_config.json").read_text())["chat_template"]
    assert "<|header_start|>" in template and "<|eot|>" in template and "add_generation_prompt" in template
