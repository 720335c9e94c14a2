import pytest

from conftest import CHEN, cli
from ldm_explore.backend.errors import PromptFileError
from ldm_explore.backend.prompts import PromptSet, derive_seed


def write(tmp_path, name, data):
    f = tmp_path / name
    f.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return f


@pytest.mark.skipif(not CHEN.exists(), reason="shared reference data not present")
def test_reads_the_anchors_csvs_as_utf8():
    train = PromptSet.read(CHEN / "train_split_prompts_seeds.csv")
    test = PromptSet.read(CHEN / "test_split_prompts_seeds.csv")
    assert (len(train), len(test)) == (246, 371)
    p = test[1]
    assert p.prompt == "Carbo Harken Winch Triple/émerillon/taquet 150 57 mm"
    assert (p.seed, p.index) == (28943888, 4834596)
    # the first test prompt is a CSV field with doubled quotes, read as csv does
    assert test[0].prompt.startswith('"""36""')
    non_ascii = sum(any(ord(c) > 127 for c in p.prompt) for p in list(train) + list(test))
    assert non_ascii == 39  # the README's count: none garbled, none lost


def test_paper_column_names_any_order_and_bom(tmp_path):
    f = write(tmp_path, "p.csv", "\ufeffSeed,Prompt Index,Prompt\n7,3,a blue cone\n8,9,\"a cube, red\"\n")
    ps = PromptSet.read(f)
    assert [(p.index, p.prompt, p.seed) for p in ps] == [(3, "a blue cone", 7), (9, "a cube, red", 8)]


def test_split_column(tmp_path):
    f = write(tmp_path, "p.csv", "prompts,seeds,prompt_inds,split\na,1,0,train\nb,2,1,test\nc,3,2,train\n")
    ps = PromptSet.read(f)
    assert ps.splits() == {"train": 2, "test": 1}
    assert [p.prompt for p in ps.select("train")] == ["a", "c"]
    with pytest.raises(PromptFileError, match="no prompts in split 'val'"):
        ps.select("val")


def test_plain_text_seeds_are_derived_from_the_line(tmp_path):
    f = write(tmp_path, "p.txt", "# comment\na red sphere\n\na blue cube\n")
    ps = PromptSet.read(f)
    assert [(p.index, p.prompt) for p in ps] == [(2, "a red sphere"), (4, "a blue cube")]
    assert ps[0].seed == derive_seed("a red sphere") != ps[1].seed
    f2 = write(tmp_path, "q.txt", "something else\na red sphere\n")
    assert PromptSet.read(f2)[1].seed == ps[0].seed  # stable under edits elsewhere


BAD = [
    ("undecodable.csv", b"prompts,seeds,prompt_inds\na cat,1,0\ncaf\xe9 au lait,2,1\n",
     "undecodable.csv:3: column 4: byte 0xe9 is not valid UTF-8 (save the file as UTF-8)"),
    ("nocol.csv", "prompts,prompt_inds\na cat,0\n",
     "nocol.csv:1: field 'seed': missing column 'seeds' or 'seed' (header is: prompts,prompt_inds)"),
    ("emptyprompt.csv", "prompts,seeds,prompt_inds\na cat,1,0\n  ,2,1\n",
     "emptyprompt.csv:3: field 'prompts': empty prompt"),
    ("nonint.csv", "prompts,seeds,prompt_inds\na cat,1.5,0\n",
     "nonint.csv:2: field 'seeds': '1.5' is not an integer"),
    ("range.csv", "prompts,seeds,prompt_inds\na cat,-4,0\n",
     "range.csv:2: field 'seeds': -4 is out of range (0 to 4294967295)"),
    ("big.csv", "prompts,seeds,prompt_inds\na cat,99999999999,0\n",
     "big.csv:2: field 'seeds': 99999999999 is out of range (0 to 4294967295)"),
    ("dup.csv", "prompts,seeds,prompt_inds\na cat,1,5\na dog,2,6\n\"multi\nline\",3,5\n",
     "dup.csv:4: field 'prompt_inds': duplicate prompt index 5 (first on line 2)"),
    ("empty.csv", "", "empty.csv: empty file: no prompts"),
    ("blank.txt", "\n  \n", "blank.txt: empty file: no prompts"),
    ("headeronly.csv", "prompts,seeds,prompt_inds\n", "headeronly.csv: empty file: no prompts"),
]


@pytest.mark.parametrize("name,data,msg", BAD, ids=[b[0] for b in BAD])
def test_bad_input_raises_one_line(tmp_path, name, data, msg):
    f = write(tmp_path, name, data)
    with pytest.raises(PromptFileError) as e:
        PromptSet.read(f)
    assert str(e.value) == str(tmp_path / msg)
    assert e.value.path == str(f)


def test_bad_inputs_through_the_real_cli(tmp_path):
    for name, data, msg in BAD:
        f = write(tmp_path, name, data)
        r = cli("prompts", f)
        assert r.returncode == 2, (name, r.stderr)
        assert r.stderr == f"ldm-explore: error: {tmp_path / msg}\n", name
        assert "Traceback" not in r.stderr and r.stdout == ""
    r = cli("prompts", tmp_path / "missing.csv")
    assert (r.returncode, r.stderr) == (2, f"ldm-explore: error: {tmp_path / 'missing.csv'}: no such file\n")


def test_cli_lists_a_valid_file(prompt_csv):
    r = cli("prompts", prompt_csv, "-n", "2")
    assert r.returncode == 0, r.stderr
    assert "6 prompts, csv format" in r.stdout
    assert "a red cube, number 1" in r.stdout and "number 2" not in r.stdout


@pytest.mark.parametrize("argv, want", [
    (["toyworld", "train", "--cooldown", "x"], "ldm-explore toyworld train: error: argument --cooldown: invalid int value: 'x'"),
    (["toyworld", "evaluate", "--n-prompts", "x"], "ldm-explore toyworld evaluate: error: argument --n-prompts"),
    (["prompts"], "ldm-explore prompts: error: the following arguments are required"),
    (["--no-such-option"], "ldm-explore: error: unrecognized arguments: --no-such-option"),
])
def test_argument_errors_are_one_line(argv, want, capsys):
    """A value argparse itself refuses ends as every user error does: one line on stderr, exit code 2."""
    from ldm_explore.backend.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and err.startswith(want), err
