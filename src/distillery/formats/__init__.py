"""One wire format per vendor, both directions: what models/ reads from an API and what serve/
writes to a client (DESIGN.md). Each module holds the vendor's tables; nobody else spells them."""
