"""What the console's pages say, in Chinese and English.

One table, keyed by phrase; the pages pick the language from ``?lang=``, then the ``desk_lang``
cookie, then the browser's ``Accept-Language`` (the survey page: the customer's language).
"""

from __future__ import annotations

from typing import Literal

Language = Literal["zh", "en"]
LANGUAGES: tuple[Language, ...] = ("zh", "en")

PHRASES: dict[str, tuple[str, str]] = {
    # key: (zh, en)
    "console": ("服务台控制台", "Service desk console"),
    "live": ("实时", "Live"),
    "reconnecting": ("重新连接中…", "Reconnecting…"),
    "sign_out": ("退出", "Sign out"),
    "sign_in": ("登录", "Sign in"),
    "sign_in_hint": (
        "粘贴您的访问令牌（desk token issue 您的工号）。",
        "Paste your access token (desk token issue YOUR_ID).",
    ),
    "sign_in_as": (
        "此链接将以 {actor} 的身份登录。仅当链接是您本人申请的时才点击“登录”。",
        "This link signs you in as {actor}. Click Sign in only if you asked for it.",
    ),
    "token": ("访问令牌", "Access token"),
    "token_refused": ("令牌无效或已过期。", "That token is not valid, or has expired."),
    "open_tickets": ("未关闭工单", "Open tickets"),
    "queued": ("排队中", "Queued"),
    "oldest_waiting": ("最久等待", "Oldest waiting"),
    "at_risk": ("SLA 预警", "SLA at risk"),
    "breached": ("SLA 超时", "SLA breached"),
    "requests_per_minute": ("每分钟请求", "Requests per minute"),
    "csat_today": ("今日满意度", "CSAT today"),
    "target": ("目标", "target"),
    "below_target": ("低于目标", "below target"),
    "no_ratings": ("今日暂无评分", "no ratings yet today"),
    "dead_letters": ("死信", "Dead letters"),
    "last_day": ("24 小时", "24 h"),
    "total": ("合计", "total"),
    "by_group_status": ("各组未关闭工单", "Open tickets by group and status"),
    "group": ("组", "Group"),
    "queues": ("队列", "Queues"),
    "agents_load": ("坐席负载 / 容量", "Agent load vs capacity"),
    "agent": ("坐席", "Agent"),
    "off_shift": ("下班", "off shift"),
    "compliance_today": ("今日 SLA 达成率", "SLA compliance today"),
    "metric": ("指标", "Metric"),
    "met": ("达成", "met"),
    "traffic": ("请求与拒绝", "Requests and rejections"),
    "last_15_minutes": ("最近 15 分钟", "last 15 minutes"),
    "rejections_hour": ("最近一小时拒绝", "Rejections, last hour"),
    "none": ("无", "none"),
    "service": ("服务", "Service"),
    "csat_by_group": ("今日各组满意度", "CSAT by group today"),
    "rated": ("评分数", "rated"),
    "review": ("坐席考核（自 {since} 起）", "Agent review (since {since})"),
    "handled": ("处理", "Handled"),
    "mean_first_response": ("平均首次响应", "Mean first response"),
    "csat": ("满意度", "CSAT"),
    "reopen_rate": ("重开率", "Reopen rate"),
    "in_time": ("时限内完成", "SLA in time"),
    "of_clocks": ("共 {n} 项", "of {n}"),
    "live_changes": ("实时动态", "Live changes"),
    "waiting_for_changes": ("等待工单变化…", "Waiting for ticket changes…"),
    "updated": ("更新于", "Updated"),
    "nothing_here": ("暂无数据", "Nothing yet"),
    # statuses and metrics
    "status_received": ("已接收", "received"),
    "status_queued": ("排队", "queued"),
    "status_assigned": ("已分派", "assigned"),
    "status_accepted": ("已接单", "accepted"),
    "status_in_progress": ("处理中", "in progress"),
    "status_waiting_for_customer": ("待客户回复", "waiting"),
    "status_resolved": ("已解决", "resolved"),
    "status_closed": ("已关闭", "closed"),
    "metric_first_response": ("首次响应", "first response"),
    "metric_start_of_work": ("开始处理", "start of work"),
    "metric_resolution": ("解决", "resolution"),
    "metric_complaint_first_contact": ("投诉首次联系", "complaint contact"),
    # the survey
    "survey_title": ("服务满意度调查", "How did we do?"),
    "survey_intro": (
        "您的请求 {number}（{subject}）已解决。请为本次服务打分。",
        "Your request {number} ({subject}) is resolved. Please rate our service.",
    ),
    "score_1": ("非常不满意", "Very dissatisfied"),
    "score_2": ("不满意", "Dissatisfied"),
    "score_3": ("一般", "Neutral"),
    "score_4": ("满意", "Satisfied"),
    "score_5": ("非常满意", "Very satisfied"),
    "comment": ("您的意见（可选）", "Your comment (optional)"),
    "submit": ("提交评价", "Send my rating"),
    "thanks": ("感谢您的评价！", "Thank you for your rating!"),
    "thanks_pending": (
        "感谢您的评价，我们正在记录。",
        "Thank you! Your rating is being recorded.",
    ),
    "already_recorded": (
        "您已经为此请求评过分，感谢！",
        "Your rating for this request is already recorded. Thank you!",
    ),
    "survey_refused": ("暂时无法记录您的评价：{reason}", "We could not record it: {reason}"),
    "not_yet": (
        "此请求尚未解决：解决后即可评价。",
        "This request is not resolved yet: you can rate it once it is.",
    ),
    "survey_opening": ("正在打开调查…", "Opening your survey…"),
    "survey_needs_script": (
        "请在浏览器中启用 JavaScript 后重新打开此链接。",
        "Please allow JavaScript in your browser, then open the link again.",
    ),
    "link_invalid": (
        "此链接无效或已过期。",
        "This link is not valid, or it has expired.",
    ),
    "choose_score": ("请选择 1–5 分。", "Please choose a score from 1 to 5."),
    "try_again": (
        "暂时无法记录您的评价，请稍后再提交。",
        "We could not record your rating just now. Please send it again in a moment.",
    ),
    "comment_too_long": (
        "您的意见过长，请控制在 4000 字以内。",
        "Your comment is too long: 4,000 characters at most.",
    ),
    "reopen_title": ("问题仍未解决？", "Not solved?"),
    "reopen_reason": (
        "请告诉我们仍存在什么问题，我们将重新处理您的请求。",
        "Tell us what is still wrong, and we will reopen your request.",
    ),
    "reopen_submit": ("重新打开我的请求", "Reopen my request"),
    "reopen_reason_invalid": (
        "请说明仍存在的问题（4000 字以内）。",
        "Please tell us what is still wrong (4,000 characters at most).",
    ),
    "reopen_try_again": (
        "暂时无法重新打开您的请求，请稍后再试。",
        "We could not reopen your request just now. Please try again in a moment.",
    ),
    "reopened": (
        "您的请求 {number} 已重新打开，我们会尽快跟进。",
        "Your request {number} is open again: we will get back to you soon.",
    ),
    "reopen_pending": (
        "我们正在重新打开您的请求 {number}。",
        "We are reopening your request {number}.",
    ),
    "cannot_reopen": (
        "请求 {number} 已无法在此重新打开。请直接回复我们的邮件或再次联系我们，我们会为您跟进。",
        "Request {number} can no longer be reopened here. Reply to our email or write to us "
        "again, and we will follow it up.",
    ),
}


def phrase(key: str, language: Language, **values: str) -> str:
    zh, en = PHRASES.get(key, (key, key))
    text = zh if language == "zh" else en
    return text.format(**values) if values else text


def pick(
    asked: str | None, remembered: str | None, accept: str | None, fallback: str | None = None
) -> Language:
    """The page's language: asked for, remembered, the fallback (the customer's), the browser's."""
    for choice in (asked, remembered, fallback):
        if choice and choice[:2].lower() in LANGUAGES:
            return "zh" if choice[:2].lower() == "zh" else "en"
    return "zh" if (accept or "").lower().startswith("zh") else "en"
