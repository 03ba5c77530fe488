"""siplab reference SIP router: a sans-IO SIP core (``router.sip``), transaction users
(``router.features``), trio transports (``router.transport``) and the realtime DB
(``router.realtime``)."""
