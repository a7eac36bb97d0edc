import cProfile, pstats, io
from messaging.inbound import processing, receive
from tests.messaging.inbound_helpers import BASE_URL, DipSigner, body_of, inbound_channel, pushed_if021, trust


def test_profile_round(world, settings):
    settings.BUSBAR_WEBHOOK_BASE_URL = BASE_URL
    receive.forget_endpoints()
    channel = inbound_channel(world.acme.id)
    signer = DipSigner()
    trust(world.acme.id, channel.connection, signer.ca)
    url = f"{BASE_URL}/dip/webhooks/{channel.webhook_token}"
    from messaging.events import endpoints
    from core.tenancy import tenant_context
    for _ in range(5):
        body = body_of(*[pushed_if021(mpan=None or "2000056535971") for _ in range(100)])
        answer = receive.receive_push(token=channel.webhook_token, url=url, headers=signer.headers(url, body), body=body)
        assert answer.status == 201
    import time; prof = cProfile.Profile(time.process_time)
    prof.enable()
    report, claimed = processing.process_round(tenant_id=world.acme.id)
    prof.disable()
    print(report.counts(), claimed)
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(60)
    open("/tmp/pipe/round_profile.txt", "w").write(out.getvalue())
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(40)
    open("/tmp/pipe/round_profile_tot.txt", "w").write(out.getvalue())
