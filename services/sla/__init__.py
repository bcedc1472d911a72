"""The sla service. Response-time clocks on business calendars, warnings, escalation ladder."""
