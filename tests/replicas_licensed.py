"""Stand-ins for the licensed corpora (IEMOCAP, MSP-IMPROV): the releases' layouts and line
formats, a handful of utterances each, very short synthetic audio.
"""
from pathlib import Path
from typing import Iterable, List, Sequence, Tuple

from replicas import write_wav

SECONDS = 0.1

# (utterance suffix, category) per dialog. The improvised dialog is recorded with the female
# actor wearing the markers (Ses01F_), the scripted one with the male (Ses01M_), so both kinds
# of name have utterances by the other actor.
IEMOCAP_IMPRO = (("F000", "neu"), ("M000", "ang"), ("F001", "exc"), ("M001", "sad"),
                 ("F002", "xxx"), ("M002", "fru"), ("M003", "hap"))
IEMOCAP_SCRIPT = (("F000", "sad"), ("M000", "neu"), ("F001", "exc"), ("M001", "ang"), ("F002", "fru"))
IEMOCAP_HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
# what each evaluator line looks like; the scanner must ignore all of them
IEMOCAP_EVALUATORS = ("C-E2:\tNeutral;\t()\n", "C-E3:\tFrustration; Anger;\t(annoyed)\n",
                      "A-E3:\tval 3; act 2; dom  2;\t()\n", "A-F1:\tval 2; act 3; dom  3;\t(mildly aggravated)\n")


def iemocap_dialogs(session: int) -> List[Tuple[str, Sequence[Tuple[str, str]]]]:
    return [(f"Ses{session:02d}F_impro01", IEMOCAP_IMPRO), (f"Ses{session:02d}M_script01_1", IEMOCAP_SCRIPT)]


def make_iemocap(root: Path, sessions: Iterable[int] = (1, 2, 3, 4, 5)) -> Path:
    """`<root>/IEMOCAP_full_release/Session1/...`; returns the release folder.

    Per session: one improvised and one scripted dialog (12 utterances, 9 of them in the
    4-class set), a macOS `._` label file and a Categorical/ subfolder that must not be read.
    """
    release = Path(root) / "IEMOCAP_full_release"
    for n in sessions:
        session = release / f"Session{n}"
        evaluation = session / "dialog" / "EmoEvaluation"
        evaluation.mkdir(parents=True, exist_ok=True)
        for dialog, lines in iemocap_dialogs(n):
            (evaluation / f"{dialog}.txt").write_text(_emo_evaluation(dialog, lines))
            (evaluation / f"._{dialog}.txt").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
            for suffix, _ in lines:
                write_wav(session / "sentences" / "wav" / dialog / f"{dialog}_{suffix}.wav", seconds=SECONDS)
        categorical = evaluation / "Categorical"
        categorical.mkdir(exist_ok=True)
        (categorical / f"Ses{n:02d}F_impro01_e2_cat.txt").write_text(f"Ses{n:02d}F_impro01_F000 :Neutral state; ()\n")
    return release


def _emo_evaluation(dialog: str, lines: Sequence[Tuple[str, str]]) -> str:
    text = IEMOCAP_HEADER
    for i, (suffix, category) in enumerate(lines):
        start = 2.0 + 3.5 * i
        text += f"[{start:.4f} - {start + 2.1:.4f}]\t{dialog}_{suffix}\t{category}\t[2.5000, 3.0000, 2.5000]\n"
        text += "".join(IEMOCAP_EVALUATORS) + "\n"
    return text


def iemocap_utt(name: str) -> str:
    """The data-dir id of an IEMOCAP utterance name (speaker from the last field's letter)."""
    return f"iemocap_{name[:5]}{name.rsplit('_', 1)[1][0]}-{name}"


# (sentence with elicitation target, recording type, turn, consensus label) of the female actor's scenarios,
# turns as the release names them (sertk.data.corpora.msp_improv): read FF, target FM, and in improvisations
# and between takes both actors' turns, MF the male partner talking; the male actor's scenarios mirror them.
# Targets and labels disagree on purpose, since only the label is the label.
MSP_CLIPS = (("S01A", "P", "MF01", "A"), ("S01A", "R", "FF01", "N"), ("S02H", "S", "FM01", "H"),
             ("S03S", "T", "FM01", "S"), ("S04N", "P", "FM02", "O"), ("S05H", "R", "FF02", "X"))
MSP_EVALUATORS = ("ea1;  Angry; Frustrated;  A:3.0; V:2.0; D:2.5;  N:4.0;\n",
                  "ea2;  Neutral;  A:2.0; V:3.0; D:3.0;  N:4.0;\n")


def msp_clips(sessions: Iterable[int]) -> List[Tuple[str, str, str, str, str]]:
    """(session folder, sentence, rectype, clip base name without prefix, label): per session, each
    actor's scenarios, so that each speaker talks in four labelled clips (one in the partner's scenario)."""
    clips = []
    mirror = str.maketrans("FM", "MF")
    for n in sessions:
        for actor in (f"F{n:02d}", f"M{n:02d}"):
            for sentence, rectype, turn, label in MSP_CLIPS:
                turn = turn if actor[0] == "F" else turn.translate(mirror)
                clips.append((f"session{n}", sentence, rectype, f"{sentence}-{actor}-{rectype}-{turn}", label))
    return clips


def make_msp_improv(root: Path, sessions: Iterable[int] = (1, 2), audio_subdir: bool = True,
                    evaluation_name: str = "Evaluation.txt") -> Path:
    """`<root>/Evaluation.txt` and `<root>/Audio/session1/S01A/P/MSP-IMPROV-S01A-F01-P-FM01.wav`
    (without `Audio/` if `audio_subdir` is false), 44.1 kHz audio; returns root.

    Per actor (two per session): six clips of their scenarios, four with a 4-class label, one O and one X;
    each actor talks in four labelled clips (msp_clips).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    audio = root / "Audio" if audio_subdir else root
    clips = msp_clips(sessions)
    text = ""
    for session, sentence, rectype, base, label in clips:
        write_wav(audio / session / sentence / rectype / f"MSP-IMPROV-{base}.wav", seconds=SECONDS, sr=44100)
        text += f"UTD-IMPROV-{base}.avi; {label}; A:3.0; V:2.5; D:2.0 ; N:4.0;\n"
        text += "".join(MSP_EVALUATORS) + "\n"
    (root / evaluation_name).write_text(text)
    return root
