"""Demo traffic: a channel adapter publishing a realistic mix of requests to intake.

Phone, chat, email, web and api; Chinese and English; simple inquiries, general faults, complex
problems, ordinary and major complaints; a customer now and then replying to a ticket they
opened; and a few malformed messages, so ``requests.rejected`` has something to say. It lives
beside the contract it speaks (:mod:`services.intake.contract`); ``desk demo``, ``desk up --demo``
and ``bench.intake`` use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer

from services.intake.contract import INCOMING_TOPIC
from services.intake.events import EVENTS_TOPIC, TicketReceived
from shared.kafka import client_options, ensure_topics, make_producer
from shared.logging import get_logger
from shared.settings import Settings

log = get_logger(__name__)

# (language, subject, description, product line, problem type, priority)
_TEMPLATES: dict[str, list[tuple[str, str, str, str | None, str | None, str]]] = {
    "simple": [
        ("zh", "请问营业时间", "请问你们周末的营业时间是几点到几点？", None, "inquiry", "low"),
        ("zh", "如何重置密码", "我忘记了账户密码，请问怎么重置密码？", None, "inquiry", "normal"),
        ("zh", "发票查询", "想了解一下上个月订单的发票怎么开。", None, "inquiry", "normal"),
        (
            "en",
            "How do I reset my password?",
            "I can't remember my password.",
            None,
            "inquiry",
            "normal",
        ),
        (
            "en",
            "Order status",
            "Can you tell me the order status of #5512?",
            None,
            "inquiry",
            "low",
        ),
        (
            "en",
            "Opening hours",
            "What are your business hours on public holidays?",
            None,
            None,
            "low",
        ),
    ],
    "general": [
        ("zh", "打印机卡纸", "三楼的打印机一直卡纸，无法打印。", "printer", "hardware", "normal"),
        (
            "zh",
            "电脑无法开机",
            "我的笔记本电脑今天早上无法开机，指示灯不亮。",
            "laptop",
            "hardware",
            "high",
        ),
        ("zh", "显示器没有信号", "显示器一直显示没有信号。", "monitor", "hardware", "normal"),
        (
            "en",
            "Laptop keeps restarting",
            "My laptop keeps restarting every ten minutes.",
            "laptop",
            "hardware",
            "normal",
        ),
        (
            "en",
            "Printer not working",
            "The printer on floor 2 shows an error and does not work.",
            "printer",
            "hardware",
            "normal",
        ),
        (
            "en",
            "ERP report crashes",
            "The monthly report crashes with an error.",
            "erp",
            "software",
            "normal",
        ),
    ],
    "complex": [
        ("zh", "系统瘫痪", "整个部门都无法登录ERP，服务中断超过一小时。", "erp", None, "urgent"),
        ("zh", "数据丢失", "昨晚升级后数据丢失，客户订单全部不见了。", "erp", "data", "high"),
        (
            "en",
            "Production down",
            "Production down: all users get a 502 since 09:00.",
            "erp",
            None,
            "urgent",
        ),
        (
            "en",
            "Integration failing",
            "Orders from the webshop no longer reach the warehouse.",
            "erp",
            "integration",
            "high",
        ),
    ],
    "complaint": [
        (
            "zh",
            "投诉客服态度",
            "客服态度恶劣，问题拖了一周没人处理，我非常不满意。",
            None,
            None,
            "normal",
        ),
        ("zh", "要求退款", "产品质量太差，要求退款并赔偿。", None, "complaint", "high"),
        (
            "en",
            "Complaint about service",
            "This is unacceptable, nobody called me back.",
            None,
            None,
            "normal",
        ),
    ],
    "major_complaint": [
        ("zh", "严重投诉", "再不解决我就找律师起诉，并向媒体曝光！", None, "complaint", "high"),
        (
            "en",
            "Formal complaint",
            "I will take legal action and contact the media.",
            None,
            "complaint",
            "high",
        ),
    ],
}
_MIX = {"simple": 35, "general": 35, "complex": 12, "complaint": 12, "major_complaint": 6}
_CHANNELS = {"email": 30, "web": 25, "chat": 20, "phone": 15, "api": 10}
_NAMES = {
    "zh": ["王芳", "李伟", "张敏", "刘洋", "陈静", "杨磊"],
    "en": ["Alice Smith", "Bob Lee", "Carla Diaz", "Dan Wu", "Eve Martin"],
}


class DemoTraffic:
    """Generates requests (as dicts) and the occasional bad message (as bytes)."""

    def __init__(self, seed: int | None = None, run: str | None = None) -> None:
        self.random = random.Random(seed)
        self.run = run or f"{int(time.time())}"
        self.sent = 0
        self.known_tickets: deque[tuple[str, dict[str, Any]]] = deque(maxlen=200)
        """Tickets seen received, with their customer: a reply comes from the ticket's own
        customer (intake treats one from anybody else as a ticket of its own)."""

    def next(self) -> tuple[str, bytes]:
        """The key and value of the next message."""
        self.sent += 1
        roll = self.random.random()
        if roll < 0.03:
            return f"bad:{self.sent}", self._malformed()
        request = self.request()
        if roll < 0.10 and self.known_tickets:
            request["reply_to_ticket"], request["customer"] = self.random.choice(self.known_tickets)
            request["subject"] = "Re: " + request["subject"]
            request["description"] = self.random.choice(
                ["还是没有解决，请尽快处理。", "Any update on this?", "问题依旧存在。"]
            )
        key = f"{request['channel']}:{request['channel_message_id']}"
        return key, json.dumps(request, ensure_ascii=False).encode()

    def request(self) -> dict[str, Any]:
        kind = self._weighted(_MIX)
        language, subject, description, product, problem, priority = self.random.choice(
            _TEMPLATES[kind]
        )
        channel = self._weighted(_CHANNELS)
        name = self.random.choice(_NAMES[language])
        customer: dict[str, Any] = {
            "name": name,
            "language": "zh-CN" if language == "zh" else "en",
            "customer_id": f"C{self.random.randint(1000, 9999)}",
        }
        if channel == "phone" or self.random.random() < 0.3:
            customer["phone"] = f"+86138{self.random.randint(10_000_000, 99_999_999)}"
        if channel != "phone" or "phone" not in customer:
            customer["email"] = f"customer{self.random.randint(1, 5000)}@example.com"
        if self.random.random() < 0.08:
            customer["tier"] = "vip"
        request: dict[str, Any] = {
            "channel": channel,
            "channel_message_id": f"demo-{self.run}-{self.sent}",
            "received_at": datetime.now(UTC).isoformat(),
            "customer": customer,
            "subject": subject,
            "description": description,
            "priority": priority,
        }
        if product:
            request["product_line"] = product
        if problem:
            request["problem_type"] = problem
        if self.random.random() < 0.15:
            request["attachments"] = [
                {
                    "name": "screenshot.png",
                    "size": self.random.randint(10_000, 900_000),
                    "content_type": "image/png",
                    "url": f"https://files.example.com/demo/{self.sent}.png",
                }
            ]
        return request

    def _malformed(self) -> bytes:
        request = self.request()
        breakage = self.random.choice(["json", "channel", "contact", "subject"])
        if breakage == "json":
            return b'{"channel": "email", "subject": '
        if breakage == "channel":
            request["channel"] = "fax"
        elif breakage == "contact":
            request["customer"].pop("email", None)
            request["customer"].pop("phone", None)
        else:
            request["subject"] = "x" * 400
        return json.dumps(request, ensure_ascii=False).encode()

    def _weighted(self, weights: dict[str, int]) -> str:
        return self.random.choices(list(weights), weights=list(weights.values()))[0]


async def run_demo(
    settings: Settings,
    *,
    rate: float,
    stop: asyncio.Event,
    count: int = 0,
    seed: int | None = None,
    on_sent: Callable[[int], None] | None = None,
) -> int:
    """Publish demo requests at ``rate`` per second until ``count`` (0: until ``stop``); tell
    ``on_sent`` how many went out after each (else log every 50th)."""
    topic = settings.topic(INCOMING_TOPIC)
    await ensure_topics(settings, [topic])
    traffic = DemoTraffic(seed)
    producer = make_producer(settings, client_id="desk-demo")
    await producer.start()
    numbers = asyncio.create_task(_learn_numbers(settings, traffic))
    interval = 1.0 / rate if rate > 0 else 0.0
    started = time.monotonic()
    try:
        while not stop.is_set() and (count == 0 or traffic.sent < count):
            key, value = traffic.next()
            await producer.send(topic, value=value, key=key.encode())
            if on_sent is not None:
                on_sent(traffic.sent)
            elif traffic.sent % 50 == 0:
                log.info("demo traffic", sent=traffic.sent, rate_per_s=rate)
            delay = started + traffic.sent * interval - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        await producer.flush()
    finally:
        numbers.cancel()
        await asyncio.gather(numbers, return_exceptions=True)
        await producer.stop()
    return traffic.sent


async def _learn_numbers(settings: Settings, traffic: DemoTraffic) -> None:
    """Follow intake.events for ticket numbers, so demo customers can reply to their tickets."""
    received = f'"{TicketReceived.event_type()}"'.encode()
    consumer = AIOKafkaConsumer(
        settings.topic(EVENTS_TOPIC),
        **client_options(settings),
        auto_offset_reset="latest",
        fetch_max_wait_ms=min(settings.kafka_fetch_max_wait_ms, 200),
    )
    await consumer.start()
    try:
        async for record in consumer:
            if record.value and received in record.value:
                ticket = json.loads(record.value)["data"]
                customer = {k: v for k, v in ticket["customer"].items() if v is not None}
                traffic.known_tickets.append((ticket["number"], customer))
    finally:
        await consumer.stop()
