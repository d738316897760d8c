"""Where the CLI finds the Rich dashboard; it lives in mlxgpt/ui/dashboard/."""

from mlxgpt.ui.dashboard import RichDashboard

__all__ = ["RichDashboard"]
