"""Offers and ad events made from the populations, as the application makes them."""

from __future__ import annotations

from sqlalchemy import Connection, text

from qsnap_gui.tools.demo.spec import DemoSpec, h


def insert_offers(conn: Connection, spec: DemoSpec) -> tuple[int, int]:
    """Offers from a few populations of each band, and ad events from half of those offers.

    As the application makes them: an offer copies its population's snapshot, but one made
    while that snapshot was still NULL stayed NULL (also after the population was filled);
    an ad event copies its offer's.
    """
    offers = conn.execute(
        text(
            f"""
            insert into offers (campaign_id, me_file_id, media_run_id, media_piece_id,
                                ad_phase_count_to_complete, target_band_id, offer_amt,
                                marketer_cost_amt, is_payable, is_current, created_at,
                                updated_at, matching_tags_snapshot)
            select b.target_id, p.me_file_id, b.target_id * 10 + 1, b.target_id * 10 + 1, 3,
                   p.target_band_id, 0.50, 0.75, true, true,
                   p.created_at + interval '1 hour', p.created_at + interval '1 hour',
                   case when {h(spec.seed, 11, "p.id")} % 100 < 15 then null
                        else p.matching_tags_snapshot end
            from target_populations p
            join target_bands b on b.id = p.target_band_id
            where p.me_file_id is not null and b.target_id is not null
              and ({h(spec.seed, 10, "p.id")} % 1000 < :per_mille
                   or p.id in (select min(id) from target_populations group by target_band_id))
            """
        ),
        {"per_mille": spec.offers_per_mille},
    ).rowcount
    events = conn.execute(
        text(
            f"""
            insert into ad_events (campaign_id, me_file_id, media_run_id, media_piece_id,
                                   media_piece_phase_id, target_id, target_band_id, offer_id,
                                   offer_bid_amt, is_payable, is_throttled, is_demo,
                                   is_offer_complete, offer_marketer_cost_amt,
                                   event_marketer_cost_amt, event_me_file_collect_amt,
                                   event_sponster_collect_amt, ip_address, url, created_at,
                                   updated_at, matching_tags_snapshot)
            select o.campaign_id, o.me_file_id, o.media_run_id, o.media_piece_id, 1,
                   o.campaign_id, o.target_band_id, o.id, o.offer_amt, true, false, false,
                   false, o.marketer_cost_amt, 0.25, 0.25, 0.25,
                   '203.0.113.' || (o.id % 250 + 1), 'https://example.com/demo-ad',
                   o.created_at + interval '1 hour', o.created_at + interval '1 hour',
                   case when {h(spec.seed, 13, "o.id")} % 100 < 10 then null
                        else o.matching_tags_snapshot end
            from offers o
            where {h(spec.seed, 12, "o.id")} % 2 = 0
            """
        )
    ).rowcount
    return offers, events
