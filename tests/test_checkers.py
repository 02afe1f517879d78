"""The strict checkers of `distillery.checkers`, on hand-written tasks (no world needed).

A table of answers with the verdict each must get: right answers in several wordings and with
legitimate context, and wrong ones that a substring or last-number checker would pass: hedges,
ranges, candidates, negations, self-corrections, conflicting values, wrong units.
"""

from __future__ import annotations

import json

import pytest

from distillery.tasks import CHECKERS, Task, load_tasks


def task(checker, expected, query="q", context=None):
    return Task(id="t", query=query, expected=expected, checker=checker, metadata={"context": context or []})


ORDER_TOTAL = task("money", 138.62, "What is the total price of order ORD-12345?", [[3, "units"], [46.2, "usd"]])
STOCK = task("count", 60, "How many units of SKU-2083 are in stock in Berlin?")
LEFT = task("count", 178, "Order ORD-23470 ships from its city's warehouse. What stock is left?", [[188, "units"], [10, "units"]])
POUNDS = task("quantity", {"value": 27.56, "unit": "lb"}, "Convert 12.5 kilograms to pounds.")
FAHRENHEIT = task("quantity", {"value": 212, "unit": "f"}, "Convert 100 degrees Celsius to degrees Fahrenheit.")
CELSIUS = task("quantity", {"value": -17.78, "unit": "c"}, "Convert 0 °F to °C.")
ARRIVAL = task("date", "2024-05-03", "Order ORD-12345 arrives 14 days after it was placed. On what date?", ["2024-04-19"])
SHIFT = task("date", "2026-03-08", "What date is 32 days after 2026-02-04?")
SHIPPED = task("status", "shipped", "Has order ORD-12345 shipped yet?")
DELIVERED = task("status", "delivered", "Where is my order ORD-12345?")
CANCELLED = task("status", "cancelled", "Status of ORD-1?")
PENDING = task("status", "pending", "Status of ORD-1?")

CASES = [
    # money: to the cent; context (a quantity, a unit price) allowed; nothing else
    (ORDER_TOTAL, "Order ORD-12345 costs 138.62 USD in total.", True),
    (ORDER_TOTAL, "The total is $138.62.", True),
    (ORDER_TOTAL, "USD 138.62", True),
    (ORDER_TOTAL, "Order ORD-12345 (3 units at 46.2 USD each) comes to 138.62 USD.", True),
    (ORDER_TOTAL, "3 x 46.2 = 138.62 USD", True),
    (ORDER_TOTAL, "The total is -$138.62.", False),  # a minus glued to the sign: a negative amount
    (ORDER_TOTAL, "Order ORD-12345 - $138.62", True),  # a spaced dash is not a minus
    (ORDER_TOTAL, "The total is $138.62. Just kidding!", False),  # a retraction
    (STOCK, "60 units in Berlin. Ignore that, I misread the table.", False),
    (STOCK, "60 units in Berlin. That's wrong.", False),
    (ORDER_TOTAL, "The total isn't 140 USD; it is 138.62 USD.", True),
    (ORDER_TOTAL, "999.00, sorry I mean 138.62", False),
    (ORDER_TOTAL, "The total is $138.62 (I couldn't verify this).", False),  # an unverified value is a hedge
    (ORDER_TOTAL, "The total is $138.62, unverified.", False),
    (ORDER_TOTAL, "The total is $138.62k.", False),  # a scale multiplies: 138,620 dollars
    (ORDER_TOTAL, "The total is 138.62 thousand dollars.", False),
    (task("money", 77000, "Value of the Berlin stock?"), "$77k", True),
    (task("money", 77000, "Value of the Berlin stock?"), "77 thousand dollars", True),
    (task("money", 1200000, "Value of the Berlin stock?"), "$1.2 million", True),
    (STOCK, "60k units", False),
    (POUNDS, "12.5kg is 27.56 lb", True),  # "kg" glued on is a unit, not a scale
    (ORDER_TOTAL, "It costs 138.62 or 140 USD", False),
    (ORDER_TOTAL, "The total is not 138.62 USD.", False),
    (ORDER_TOTAL, "138.62 USD is incorrect.", False),
    (ORDER_TOTAL, "The total is about 138.62 USD.", False),
    (ORDER_TOTAL, "Est. 138.62 USD", False),
    (ORDER_TOTAL, "Is it 138.62 USD?", False),
    (ORDER_TOTAL, "The total is 138.6 USD.", False),
    (ORDER_TOTAL, "The total is 1.62 USD.", False),
    (ORDER_TOTAL, "The total is 275.62 USD.", False),  # $137 off: inside the old relative tolerance of big totals
    (ORDER_TOTAL, "Order ORD-12345 for 7 units costs 138.62 USD.", False),
    (ORDER_TOTAL, "Order ORD-12345: 3 units at 47.2 USD each, 138.62 USD.", False),
    (ORDER_TOTAL, "Between 130 and 140 USD: 138.62", False),
    (ORDER_TOTAL, "It costs $138.62 - $140", False),
    (ORDER_TOTAL, "138,62 USD", False),
    (ORDER_TOTAL, "-138.62 USD", False),
    (ORDER_TOTAL, "138.62 EUR", False),
    (ORDER_TOTAL, "It is 138.62 USD.\nTotal: 140 USD", False),
    (ORDER_TOTAL, "", False),
    (ORDER_TOTAL, None, False),
    # counts: identifiers are not numbers; ranges, candidates and negations fail
    (STOCK, "60 units of SKU-2083", True),
    (STOCK, "Stock of SKU-2083 in Berlin: 60 units.", True),
    (STOCK, "There are 60 units left, not 64.", True),
    (STOCK, "Either 12 or 60 units", False),
    (STOCK, "12-60 units", False),
    (STOCK, "There are not 60 units.", False),
    (STOCK, "60 units, maybe 61", False),
    (STOCK, "At least 60 units.", False),
    (STOCK, "There are 61 units of SKU-2083 in Berlin.", False),
    (STOCK, "Berlin has 60 units; Paris has 12.", False),
    (STOCK, "60.5 units", False),
    (LEFT, "After order ORD-23470 ships 10 units, 178 units are left.", True),
    (LEFT, "Stock goes from 188 to 178 units.", True),
    (LEFT, "188 - 10 = 178 units left.", True),
    (LEFT, "178 to 188 units", False),
    (LEFT, "178\u2013188 units", False),
    (LEFT, "188 units are left.", False),
    # quantities: the unit matters, restatements must convert, one step of the rounding
    (POUNDS, "12.5 kg is 27.56 lb.", True),
    (POUNDS, "27.56 pounds", True),
    (POUNDS, "27.56lbs", True),
    (POUNDS, "It is 27.56 lb (12.5 kg).", True),
    (POUNDS, "27.55 lb", True),
    (POUNDS, "27.56 kg", False),
    (POUNDS, "12.5 lb is 27.56 lb", False),
    (POUNDS, "27.6 lb", False),
    (POUNDS, "27.56 lb (12.55 kg)", False),
    (POUNDS, "27.56 lb, roughly 12 kg", False),
    (POUNDS, "27.56 lb or 28 lb", False),
    (FAHRENHEIT, "100 °C is 212 °F.", True),
    (FAHRENHEIT, "100 C = 212 F", True),
    (FAHRENHEIT, "212 degrees Fahrenheit", True),
    (FAHRENHEIT, "212 °C", False),
    (FAHRENHEIT, "100 °F", False),
    (FAHRENHEIT, "212 degrees", True),  # the question named the scale
    (FAHRENHEIT, "100 degrees is 213 degrees", False),
    (FAHRENHEIT, "100 degrees is 212 degrees", True),  # bare degrees cites the question's 100 °C too
    (FAHRENHEIT, "100 degrees is 100 degrees", False),
    (FAHRENHEIT, "101 degrees is 212 degrees", False),
    (CELSIUS, "0 °F is -17.78 °C.", True),
    (CELSIUS, "0 °F is \u221217.78 °C.", True),
    (CELSIUS, "0 °F is 17.78 °C.", False),
    # dates: exactly, in common spellings; the question's and the context's dates may be cited
    (ARRIVAL, "Order ORD-12345 arrives on 2024-05-03.", True),
    (ARRIVAL, "It arrives on May 3, 2024.", True),
    (ARRIVAL, "It arrives on Friday, 3rd of May 2024.", True),
    (ARRIVAL, "Placed on 2024-04-19, it arrives 14 days later, on 2024-05-03.", True),
    (ARRIVAL, "It arrives on 2024-05-03, not 2024-05-04.", True),
    (ARRIVAL, "It arrives on 2024-05-03 or 2024-05-04.", False),
    (ARRIVAL, "It arrives on 2024-05-03, 2024-05-04 or 2024-05-05.", False),
    (ARRIVAL, "It does not arrive on 2024-05-03.", False),
    (ARRIVAL, "It arrives after 2024-05-03.", False),
    (ARRIVAL, "It arrives on 2024-05-04.", False),
    (ARRIVAL, "2024-05-03 2024-06-01", False),
    (ARRIVAL, "It arrives on 05/03/2024.", False),  # day and month could be either way round
    (ARRIVAL, "Will it be 2024-05-03?", False),
    (ARRIVAL, "It arrives on 2024-05-03 at the earliest.", False),
    (ARRIVAL, "It arrives on 2024-05-03 or later.", False),
    (SHIFT, "32 days after 2026-02-04 is 2026-03-08.", True),
    (SHIFT, "Counting 32 days from 2026-02-04 gives 2026-03-08.", True),
    # statuses: the word, not negated, not deferred, and no other status
    (SHIPPED, "Order ORD-12345 has shipped.", True),
    (SHIPPED, "Status of ORD-12345: SHIPPED.", True),
    (SHIPPED, "It is shipped, not delivered.", True),
    (SHIPPED, "Order ORD-12345 has shipped and is not cancelled.", True),
    (SHIPPED, "Order ORD-12345 has not shipped yet.", False),
    (SHIPPED, "It hasn't shipped.", False),
    (SHIPPED, "It is not yet shipped.", False),
    (SHIPPED, "It is yet to be shipped.", False),
    (SHIPPED, "Order ORD-12345 is unshipped.", False),
    (SHIPPED, "It is non-shipped.", False),
    (SHIPPED, "It will be shipped tomorrow.", False),
    (SHIPPED, "It is shipped or delivered.", False),
    (SHIPPED, "It is pending, shipped, delivered or cancelled.", False),
    (SHIPPED, "It is delivered.", False),
    (SHIPPED, "Has it shipped? No.", False),
    (SHIPPED, "Shipped: no. Pending: yes.", False),
    (SHIPPED, "Order ORD-12345 shipped - false", False),
    (SHIPPED, "Shipped: yes.", True),
    (DELIVERED, "Order ORD-12345 was delivered.", True),
    (DELIVERED, "It shipped and was delivered.", True),
    (DELIVERED, "It is undelivered.", False),
    (DELIVERED, "It has not been delivered.", False),
    (DELIVERED, "It is on its way.", False),
    (DELIVERED, "It was shipped.", False),
    (CANCELLED, "Order ORD-1 was canceled.", True),
    (CANCELLED, "Order ORD-1 was cancelled before it shipped.", True),
    (CANCELLED, "Order ORD-1 was not cancelled.", False),
    (PENDING, "Order ORD-1 is pending; it has not shipped yet.", True),
    (PENDING, "Order ORD-1 is pending and will be shipped soon.", True),
    (PENDING, "Order ORD-1 is pending and shipped.", False),
    # words, refusals, things that do not exist
    (task("not_found", "Umber Sofa", "How much does the Umber Sofa cost?"), "There is no Umber Sofa in our catalog.", True),
    (task("not_found", "Umber Sofa", "How much does the Umber Sofa cost?"), "The Umber Sofa is not in our catalog; it's sold out.", False),
    (STOCK, "It's not zero: 60 units.", True),  # a negated zero word is no claim
    (task("count", 0, "How many units of SKU-2083 are in Berlin?"), "It's not zero.", False),
    (task("count", 0, "How many units of SKU-2083 are in Berlin?"), "It is out of stock: 0 units.", True),
    (task("mentions", ["products", "orders"]), "I can look up products, stock and orders.", True),
    (task("mentions", ["products", "orders"]), "I can't look up products or orders.", False),
    (task("mentions", ["products", "orders"]), "I help with products and orders. No wait, only products.", False),
    (task("mentions", ["products", "orders"]), "Products and orders? Not really.", False),
    (task("mentions", ["products", "orders"]), "Need help? I can look up products and orders.", True),
    (task("refusal", None, "Book me a flight to Paris."), "Sorry, I can't help with that; I can only help with the shop.", True),
    (task("refusal", None, "Book me a flight to Paris."), "Sure, I booked your flight to Paris.", False),
    (task("refusal", None, "Book me a flight to Paris."), "I can't book flights, but it is 20 C in Paris.", False),
    (task("refusal", None, "Tell me a joke about Oslo."), "I can't tell jokes, but: knock knock, who's there? Oslo.", False),
    (task("refusal", None, "Which museums should I visit in Oslo?"), "I can only help with the shop, but I'd recommend the Munch Museum.", False),
    (task("refusal", None, "Which museums should I visit in Oslo?"), "I can only help with the shop. You should visit the Munch Museum.", False),
    (task("refusal", None, "Who is the mayor of Oslo?"), "I can't look that up, but the mayor is Anne Lindboe.", False),
    (task("refusal", None, "Translate 'good morning' into Norwegian."), "I can't translate; it translates to 'god morgen'.", False),
    (task("refusal", None, "Call a taxi to the Oslo airport."), "I can't do that, but I've called one for you anyway.", False),
    (task("refusal", None, "Who is the mayor of Oslo?"), "I can't look up who the mayor of Oslo is; a city website could tell you.", True),
    (task("refusal", None, "Find me a hotel in Oslo."), "Sorry, I can only help with products and orders; you could try a travel site.", True),
    (task("not_found", "Nova Sofa"), "Sorry, there is no product called Nova Sofa.", True),
    (task("not_found", "Nova Sofa"), "I could not find a product named Nova Sofa.", True),
    (task("not_found", "Nova Sofa"), "The Nova Sofa costs 12 USD.", False),
    (task("not_found", "Nova Sofa"), "There is no product called Nova Lamp.", False),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_strict_verdicts(case):
    the_task, answer, verdict = CASES[case]
    outcome = the_task.check(answer)
    assert outcome.success is verdict, (the_task.checker, the_task.expected, answer, outcome.detail)
    assert outcome.checker == the_task.checker and outcome.detail


def test_strict_checkers_are_registered_and_load_from_task_files(tmp_path):
    assert {"money", "count", "quantity", "date", "status", "mentions", "refusal", "not_found"} <= set(CHECKERS)
    assert {"exact", "normalized", "contains", "numeric"} <= set(CHECKERS)  # the lenient names still work
    path = tmp_path / "tasks.jsonl"
    path.write_text(json.dumps({"id": "a", "query": "Total of ORD-1?", "expected": 12.5, "checker": "money",
                                "metadata": {"context": [[2, "units"]]}}) + "\n")
    (loaded,) = load_tasks(path)
    assert loaded.check("2 units: 12.50 USD").success and not loaded.check("2 units: 12.51 USD").success
