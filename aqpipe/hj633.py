"""HJ 633 AQI categories: bands, name, colour, health effects, advice.

The one copy of the table: the aggregator takes the bands, names and colours for the
`category` it writes; the public pages show all of it.

Source: HJ 633-2012 环境空气质量指数（AQI）技术规定（试行）, Table 2 (空气质量指数及相关信息:
级别, 类别, 颜色, 对健康影响情况, 建议采取的措施) and Appendix A (colour values, RGB).
HJ 633-2026 keeps the six categories, their AQI bands and colours (the revision changed
the PM breakpoints, see aggregator/tables.py). The level number is what the aggregator
writes in the `category` field of `aqi_hourly`; nothing here computes an AQI.
"""

from __future__ import annotations

from dataclasses import dataclass

SOURCE = "HJ 633-2012 表 2 与附录 A（HJ 633-2026 沿用）"


@dataclass(frozen=True)
class AqiCategory:
    level: int  # 1..6 (空气质量指数级别 一级..六级)
    label: str  # 级别: 一级 .. 六级
    lower: int  # AQI band, inclusive
    upper: int | None  # None: open-ended (> 300)
    name: str  # 类别
    colour_name: str  # 表示颜色
    rgb: tuple[int, int, int]
    health_effects: str  # 对健康影响情况
    advice: str  # 建议采取的措施

    @property
    def colour(self) -> str:
        return "#{:02x}{:02x}{:02x}".format(*self.rgb)

    @property
    def text_colour(self) -> str:
        """Black on the light colours, white on the dark ones (legible on a phone in the sun)."""
        r, g, b = self.rgb
        return "#000000" if (0.299 * r + 0.587 * g + 0.114 * b) > 140 else "#ffffff"

    def to_json(self) -> dict:
        return {"level": self.level, "label": self.label, "name": self.name, "aqi_range": [self.lower, self.upper],
                "colour": self.colour, "colour_name": self.colour_name, "rgb": list(self.rgb),
                "health_effects": self.health_effects, "advice": self.advice}


CATEGORIES: tuple[AqiCategory, ...] = (
    AqiCategory(1, "一级", 0, 50, "优", "绿色", (0, 228, 0),
                "空气质量令人满意，基本无空气污染",
                "各类人群可正常活动"),
    AqiCategory(2, "二级", 51, 100, "良", "黄色", (255, 255, 0),
                "空气质量可接受，但某些污染物可能对极少数异常敏感人群健康有较弱影响",
                "极少数异常敏感人群应减少户外活动"),
    AqiCategory(3, "三级", 101, 150, "轻度污染", "橙色", (255, 126, 0),
                "易感人群症状有轻度加剧，健康人群出现刺激症状",
                "儿童、老年人及心脏病、呼吸系统疾病患者应减少长时间、高强度的户外锻炼"),
    AqiCategory(4, "四级", 151, 200, "中度污染", "红色", (255, 0, 0),
                "进一步加剧易感人群症状，可能对健康人群心脏、呼吸系统有影响",
                "儿童、老年人及心脏病、呼吸系统疾病患者避免长时间、高强度的户外锻炼，一般人群适量减少户外运动"),
    AqiCategory(5, "五级", 201, 300, "重度污染", "紫色", (153, 0, 76),
                "心脏病和肺病患者症状显著加剧，运动耐受力降低，健康人群普遍出现症状",
                "儿童、老年人和心脏病、肺病患者应停留在室内，停止户外运动，一般人群减少户外运动"),
    AqiCategory(6, "六级", 301, None, "严重污染", "褐红色", (126, 0, 35),
                "健康人群运动耐受力降低，有明显强烈症状，提前出现某些疾病",
                "儿童、老年人和病人应当留在室内，避免体力消耗，一般人群应避免户外活动"),
)
BY_LEVEL = {c.level: c for c in CATEGORIES}

# Display names of the pollutants as the bulletins print them (首要污染物 field values).
POLLUTANT_NAMES = {"pm25": "PM2.5", "pm10": "PM10", "so2": "SO₂", "no2": "NO₂", "co": "CO", "o3": "O₃",
                   "o3_8h": "O₃ 8小时"}


def category(level: int) -> AqiCategory:
    """The category of a level written by the aggregator; an unknown level is a data error."""
    try:
        return BY_LEVEL[level]
    except KeyError:
        raise ValueError(f"AQI category level {level!r} is not one of 1..6 (HJ 633 Table 2)") from None


def category_of_aqi(aqi: int) -> AqiCategory:
    """The category an AQI falls in (used to check the stored level agrees with the AQI)."""
    for c in CATEGORIES:
        if c.upper is None or aqi <= c.upper:
            return c
    raise AssertionError("unreachable: the last category is open-ended")  # pragma: no cover
