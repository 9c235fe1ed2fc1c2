"""Labelled loan-purpose descriptions in English and Chinese, generated for tests and the demo.

Each text is built from an opener, one of several phrasings of the purpose, optional details
(amount, timing, who for), an optional sentence every purpose shares (income, repayment),
sometimes a mention of a second purpose ("and maybe also ...": the label stays the first), and
sometimes a dropped character (a typo). The shared sentences, second purposes and typos keep the
task from being a keyword lookup, and give the classifier genuinely uncertain texts to send to
review. The randomness is passed in, so a seed gives the same texts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import numpy as np

from fedrisk.decisions.purpose import PURPOSES
from fedrisk.errors import DecisionError

Language = Literal["en", "zh"]
LANGUAGES: Final[tuple[Language, ...]] = ("en", "zh")

_PHRASES: Final[dict[Language, dict[str, tuple[str, ...]]]] = {
    "en": {
        "car": (
            "buy a used car",
            "purchase a new vehicle",
            "make the down payment on a car",
            "replace my old car",
            "get a second-hand SUV for commuting",
            "pay for an auto",
        ),
        "home_improvement": (
            "renovate my kitchen",
            "repair the roof of our house",
            "redo the bathroom",
            "fix up the apartment",
            "install new windows and flooring",
            "remodel the home",
        ),
        "education": (
            "pay university tuition",
            "cover my master's degree fees",
            "pay for a coding course",
            "fund my daughter's college",
            "pay school fees for next term",
            "take a training course",
        ),
        "medical": (
            "pay hospital bills",
            "cover surgery costs",
            "pay for dental treatment",
            "cover my mother's medical expenses",
            "pay for treatment at the clinic",
            "pay for physiotherapy",
        ),
        "business": (
            "buy stock for my shop",
            "expand my small business",
            "purchase equipment for the store",
            "pay suppliers for my restaurant",
            "open a second outlet",
            "fund working capital",
        ),
        "debt_consolidation": (
            "consolidate my credit card debt",
            "pay off several loans",
            "refinance my debts",
            "clear my credit card balances",
            "combine my loans into one payment",
            "pay down high-interest debt",
        ),
        "wedding": (
            "pay for our wedding",
            "cover the wedding banquet",
            "book the wedding venue",
            "pay for the engagement and the ceremony",
            "buy wedding rings",
            "fund my marriage",
        ),
        "travel": (
            "go on a family vacation",
            "pay for a trip abroad",
            "book flights and hotels",
            "take a holiday in Japan",
            "travel during the summer",
            "pay for a honeymoon trip",
        ),
    },
    "zh": {
        "car": (
            "买一辆二手车",
            "购买新车",
            "支付购车首付",
            "换一辆车上下班",
            "买一辆代步车",
            "分期购车",
        ),
        "home_improvement": (
            "装修厨房",
            "房屋维修",
            "翻新卫生间",
            "装修新房子",
            "更换门窗和地板",
            "家里装修",
        ),
        "education": (
            "交大学学费",
            "支付研究生学费",
            "报名职业培训课程",
            "孩子上学的费用",
            "支付下学期学费",
            "出国留学",
        ),
        "medical": (
            "支付住院费用",
            "做手术的费用",
            "看牙治疗",
            "母亲看病的医疗费",
            "门诊治疗费用",
            "康复理疗",
        ),
        "business": (
            "店铺进货",
            "扩大小生意",
            "购买店里的设备",
            "支付饭店供应商货款",
            "开第二家分店",
            "补充经营周转资金",
        ),
        "debt_consolidation": (
            "还清信用卡欠款",
            "偿还几笔贷款",
            "债务重组",
            "结清信用卡账单",
            "把多笔借款合并还款",
            "偿还高利息的债务",
        ),
        "wedding": (
            "筹办婚礼",
            "支付婚宴费用",
            "预订婚礼场地",
            "订婚和结婚仪式",
            "买结婚戒指",
            "结婚用钱",
        ),
        "travel": (
            "全家出去旅游",
            "出国旅行",
            "订机票和酒店",
            "去日本度假",
            "暑假旅游",
            "蜜月旅行",
        ),
    },
}

_OPENERS: Final[dict[Language, tuple[str, ...]]] = {
    "en": (
        "I need a loan to",
        "Looking to",
        "Applying for funds to",
        "Want to",
        "Need money to",
        "Hoping to",
        "Borrowing to",
        "",
    ),
    "zh": ("我想申请贷款", "本人需要资金", "申请借款", "想借一笔钱", "贷款用于", "需要钱", ""),
}

_DETAILS: Final[dict[Language, tuple[str, ...]]] = {
    "en": (
        "about {n} dollars",
        "before next month",
        "for my family",
        "as soon as possible",
        "around {n}",
        "this year",
        "",
    ),
    "zh": ("大约{n}元", "下个月之前", "给家里用", "尽快", "{n}块左右", "今年", ""),
}

_ALSO: Final[dict[Language, tuple[str, ...]]] = {
    "en": ("and maybe also", "and then", "plus a bit to"),
    "zh": ("顺便", "另外还想", "之后"),
}

_SHARED: Final[dict[Language, tuple[str, ...]]] = {
    "en": (
        "I have a stable job and will repay on time.",
        "My income is steady.",
        "Please approve quickly.",
        "I can repay within two years.",
        "",
    ),
    "zh": ("本人工作稳定，按时还款。", "收入稳定。", "请尽快审批。", "两年内可以还清。", ""),
}


@dataclass(frozen=True)
class LabelledText:
    """One description, its true purpose and its language."""

    text: str
    label: str
    language: Language


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _typo(rng: np.random.Generator, text: str) -> str:
    if len(text) < 6:
        return text
    cut = int(rng.integers(1, len(text) - 1))
    return text[:cut] + text[cut + 1 :]


def generate_purpose_texts(
    rng: np.random.Generator,
    n: int,
    *,
    language: Language | None = None,
    typo_rate: float = 0.1,
    mix_rate: float = 0.15,
) -> list[LabelledText]:
    """``n`` labelled descriptions, purposes uniform, in ``language`` (else each at random).

    Raises
    ------
    DecisionError
        ``n`` below 1, or ``typo_rate`` or ``mix_rate`` outside [0, 1].
    """
    if n < 1:
        raise DecisionError(f"n must be at least 1; got {n}")
    for name, rate in (("typo_rate", typo_rate), ("mix_rate", mix_rate)):
        if not 0.0 <= rate <= 1.0:
            raise DecisionError(f"{name} must be in [0, 1]; got {rate}")
    texts = []
    for _ in range(n):
        lang: Language = language or LANGUAGES[int(rng.integers(2))]
        label = PURPOSES[int(rng.integers(len(PURPOSES)))]
        amount = int(rng.integers(1, 50)) * 1000
        parts = [
            _pick(rng, _OPENERS[lang]),
            _pick(rng, _PHRASES[lang][label]),
            _pick(rng, _DETAILS[lang]).format(n=amount),
        ]
        if rng.random() < mix_rate:
            other = PURPOSES[int(rng.integers(len(PURPOSES)))]
            parts += [_pick(rng, _ALSO[lang]), _pick(rng, _PHRASES[lang][other])]
        parts.append(_pick(rng, _SHARED[lang]))
        separator = " " if lang == "en" else "，"
        text = separator.join(p for p in parts if p)
        if rng.random() < typo_rate:
            text = _typo(rng, text)
        texts.append(LabelledText(text=text, label=label, language=lang))
    return texts
