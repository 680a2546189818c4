"""The support desk: customers' requests and the conversation with support, by panel, API
and email (notifications out, replies in through ``inbound``)."""
