"""The training dashboard (Rich): it observes training and owns none of it, in four small modules:

    state.py    what the events said so far, as plain numbers
    chart.py    the loss chart (plotext)
    layout.py   the screen: Rich panels in named Layout regions, and the final summary
    live.py     RichDashboard: the event handler that keeps a Live screen up to date
"""

from mlxgpt.ui.dashboard.live import RichDashboard

__all__ = ["RichDashboard"]
