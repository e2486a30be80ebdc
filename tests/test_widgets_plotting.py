import matplotlib.pyplot as plt
import pytest

from instabilities import plotting, widgets


def draw(v):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, v])
    return fig


def test_frame_slider_has_one_frame_per_value():
    html = widgets.frame_slider_html(draw, [0.1, 0.2, 0.3], "eta")
    assert html.count("<img") == 3 and 'type="range"' in html and 'max="2"' in html
    assert html.count("display:block") == 1  # only the initial frame is visible
    with pytest.raises(ValueError):
        widgets.frame_slider_html(draw, [], "eta")


def test_building_flag(monkeypatch):
    monkeypatch.setenv("BOOK_BUILD", "1")
    assert widgets.building_book()
    monkeypatch.setenv("BOOK_BUILD", "0")
    assert not widgets.building_book()


def test_threshold_line_and_styles():
    fig, ax = plt.subplots()
    plotting.threshold_line(ax, 0.2)
    line = ax.get_lines()[0]
    assert line.get_ydata()[0] == pytest.approx(10.0) and line.get_linestyle() == "--"
    styles = [plotting.series_style(i, 4) for i in range(4)]
    assert len({s["linestyle"] if isinstance(s["linestyle"], str) else str(s["linestyle"]) for s in styles}) == 4
    plt.close(fig)
