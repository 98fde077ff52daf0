"""`make demo` keeps working and keeps proving what it says."""

from unilstm import demo


def test_demo_runs_and_its_numbers_agree(capsys):
    demo.main()
    text = capsys.readouterr().out
    assert "output: (3, 5, 16)   h_n: (1, 3, 16)   c_n: (1, 3, 16)" in text
    assert "unilstm.torch vs the real torch.nn.LSTM:                      0" in text
    assert "outputs after reloading, max |difference|: 0" in text
    assert "whole_seq_output (3, 5, 16), final_memory_state (3, 16), final_carry_state (3, 16)" in text
    assert "MindSpore door on the Keras weights, max |difference|: output 0, h 0, c 0" in text
    assert text.count("exit code 0") == 2
