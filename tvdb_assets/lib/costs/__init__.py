"""Money, in one place: what calls cost (`prices`), the budget they must stay within
(`budget`), who they are made for (`calls`), the ledger every billable call goes through
(`ledger`, its rows in `store.cost_ledger`), and the dry-run estimate (`estimate`).

Import the modules themselves; this package re-exports nothing, so that the store can
use the budget's types while the ledger uses the store.
"""
