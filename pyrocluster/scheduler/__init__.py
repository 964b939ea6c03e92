"""Schedules: run jobs on cron or interval ticks, exactly once per tick across any number of schedulers."""
