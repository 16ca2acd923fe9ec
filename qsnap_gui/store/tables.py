"""The Qlarius tables (DOMAIN.md), as SQLAlchemy 2 typed models with production's types.

Every column has production's type, nullability and default (Qlarius's structure dump plus
the later migrations), so a demo or test database behaves like the real one. Columns marked
``extra`` exist in production but qsnap does not need them: a database without them is
still accepted (the others are ``columns.REQUIRED_COLUMNS`` and ``OPTIONAL_COLUMNS``, plain
data so that connecting needs no ORM). ``offers`` and ``ad_events`` are optional tables
(older databases lack them).
Foreign keys are deliberately absent, as in production; ids are 32-bit and come from serial
sequences.
"""

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Boolean,
    Date,
    DateTime,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from qsnap_gui.store.columns import OPTIONAL_COLUMNS as OPTIONAL_COLUMNS
from qsnap_gui.store.columns import REQUIRED_COLUMNS as REQUIRED_COLUMNS

EXTRA = {"extra": True}
OPTIONAL = {"optional": True}


def extra(*args: Any, **kwargs: Any) -> Any:
    """A production column qsnap never reads or writes."""
    return mapped_column(*args, info=EXTRA, **kwargs)


def _false() -> Any:
    return text("false")


class Base(DeclarativeBase):
    pass


class Trait(Base):
    __tablename__ = "traits"
    __table_args__ = (Index("index_traits_on_parent_trait_id", "parent_trait_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trait_name: Mapped[str] = mapped_column(String(256))
    input_type: Mapped[str] = mapped_column(String(30))
    display_order: Mapped[int] = mapped_column(Integer)
    parent_trait_id: Mapped[int | None] = mapped_column(Integer)
    modified_date: Mapped[datetime] = mapped_column(DateTime)
    modified_by: Mapped[int] = mapped_column(Integer)
    added_date: Mapped[datetime] = mapped_column(DateTime)
    added_by: Mapped[int] = mapped_column(Integer)
    trait_category_id: Mapped[int | None] = extra(Integer)
    max_length: Mapped[int | None] = extra(Integer)
    is_active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    meta_1: Mapped[str | None] = extra(String(255))
    meta_2: Mapped[str | None] = extra(String(255))
    meta_3: Mapped[str | None] = extra(String(255))


class MeFile(Base):
    __tablename__ = "me_files"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int | None] = extra(Integer)
    display_name: Mapped[str | None] = mapped_column(String(75))
    date_of_birth: Mapped[date | None] = extra(Date)
    ledger_header_id: Mapped[int | None] = extra(Integer)
    sponster_token: Mapped[str | None] = extra(String(50))
    split_amount: Mapped[int | None] = extra(Integer, server_default=text("50"))
    referral_id: Mapped[int | None] = extra(Integer)
    referral_code: Mapped[str | None] = extra(String(255))
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP(precision=6))
    updated_at: Mapped[datetime] = mapped_column(TIMESTAMP(precision=6))
    strong_start_status: Mapped[str | None] = extra(String(255), server_default="active")
    strong_start_completed_at: Mapped[datetime | None] = extra(TIMESTAMP(precision=0))
    strong_start_data: Mapped[Any | None] = extra(JSONB, server_default=text("'{}'::jsonb"))


class MeFileTag(Base):
    __tablename__ = "me_file_tags"
    __table_args__ = (
        Index("me_file_tags_me_file_id_trait_id_index", "me_file_id", "trait_id"),
        Index("index_me_file_tags_on_trait_id", "trait_id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    me_file_id: Mapped[int] = mapped_column(Integer)
    trait_id: Mapped[int] = mapped_column(Integer)
    tag_value: Mapped[str | None] = mapped_column(String(256))
    modified_date: Mapped[datetime] = mapped_column(DateTime)
    modified_by: Mapped[int] = mapped_column(Integer)
    added_date: Mapped[datetime] = mapped_column(DateTime)
    added_by: Mapped[int] = mapped_column(Integer)
    customized_hash: Mapped[str | None] = extra(Text)
    add_source_context: Mapped[str | None] = extra(String(255))


class Target(Base):
    __tablename__ = "targets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    marketer_id: Mapped[int | None] = mapped_column(Integer)
    title: Mapped[str | None] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(String(255))
    user_created_by: Mapped[int | None] = extra(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    population_status: Mapped[str | None] = mapped_column(
        String(255), server_default="not_populated"
    )
    last_populated_at: Mapped[datetime | None] = mapped_column(TIMESTAMP(precision=0))


class TargetBand(Base):
    __tablename__ = "target_bands"
    __table_args__ = (Index("index_target_bands_on_target_id", "target_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    target_id: Mapped[int | None] = mapped_column(Integer)
    title: Mapped[str | None] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(String(255))
    is_bullseye: Mapped[str] = mapped_column(String, server_default="0")
    user_created_by: Mapped[int | None] = extra(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class TraitGroup(Base):
    __tablename__ = "trait_groups"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str | None] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(String(255))
    parent_trait_id: Mapped[int | None] = mapped_column(Integer)
    marketer_id: Mapped[int | None] = mapped_column(Integer)
    user_created_by: Mapped[int | None] = extra(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    deactivated_at: Mapped[datetime | None] = mapped_column(DateTime)


class TraitGroupTrait(Base):
    __tablename__ = "trait_group_traits"
    __table_args__ = (
        Index("index_trait_group_traits_on_trait_group_id", "trait_group_id"),
        Index("index_trait_group_traits_on_trait_id", "trait_id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trait_group_id: Mapped[int | None] = mapped_column(Integer)
    trait_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class TargetBandTraitGroup(Base):
    __tablename__ = "target_band_trait_groups"
    __table_args__ = (
        Index("index_target_band_trait_groups_on_target_band_id", "target_band_id"),
        Index("index_target_band_trait_groups_on_trait_group_id", "trait_group_id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    target_band_id: Mapped[int | None] = mapped_column(Integer)
    trait_group_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


SNAPSHOT_IS_NULL = text("matching_tags_snapshot IS NULL")


class TargetPopulation(Base):
    __tablename__ = "target_populations"
    __table_args__ = (
        Index(
            "target_populations_target_band_id_me_file_id_index",
            "target_band_id",
            "me_file_id",
            unique=True,
        ),
        Index(
            "target_populations_matching_tags_snapshot_index",
            "matching_tags_snapshot",
            postgresql_using="gin",
        ),
        Index("target_populations_null_snapshot_idx", "id", postgresql_where=SNAPSHOT_IS_NULL),
        Index("index_target_populations_on_me_file_id", "me_file_id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    target_band_id: Mapped[int | None] = mapped_column(Integer)
    me_file_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=text("CURRENT_TIMESTAMP"))
    updated_at: Mapped[datetime] = mapped_column(DateTime, server_default=text("CURRENT_TIMESTAMP"))
    matching_tags_snapshot: Mapped[Any | None] = mapped_column(JSONB(none_as_null=True))


class Offer(Base):
    __tablename__ = "offers"
    __table_args__ = (
        Index(
            "offers_campaign_me_file_media_run_unique_index",
            "campaign_id",
            "me_file_id",
            "media_run_id",
            unique=True,
        ),
        Index("index_offers_on_me_file_id", "me_file_id"),
        Index("index_offers_on_target_band_id", "target_band_id"),
        Index(
            "offers_matching_tags_snapshot_index", "matching_tags_snapshot", postgresql_using="gin"
        ),
        Index(
            "offers_null_snapshot_idx",
            "me_file_id",
            "target_band_id",
            postgresql_where=SNAPSHOT_IS_NULL,
        ),
        {"info": OPTIONAL},
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(Integer)
    me_file_id: Mapped[int] = mapped_column(Integer)
    media_run_id: Mapped[int] = mapped_column(Integer)
    media_piece_id: Mapped[int] = mapped_column(Integer)
    ad_phase_count_to_complete: Mapped[int] = extra(SmallInteger)
    target_band_id: Mapped[int] = mapped_column(Integer)
    offer_amt: Mapped[Decimal] = extra(Numeric(10, 2))
    marketer_cost_amt: Mapped[Decimal] = extra(Numeric(10, 2))
    pending_until: Mapped[datetime | None] = extra(DateTime)
    is_payable: Mapped[bool] = extra(Boolean, server_default=_false())
    is_throttled: Mapped[bool] = extra(Boolean, server_default=_false())
    is_demo: Mapped[bool] = extra(Boolean, server_default=_false())
    is_current: Mapped[bool] = extra(Boolean, server_default=_false())
    is_jobbed: Mapped[bool] = extra(Boolean, server_default=_false())
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    matching_tags_snapshot: Mapped[Any | None] = mapped_column(JSONB(none_as_null=True))


class AdEvent(Base):
    __tablename__ = "ad_events"
    __table_args__ = (
        Index("index_ad_events_on_me_file_id", "me_file_id"),
        Index("index_ad_events_on_offer_id", "offer_id"),
        Index("index_ad_events_on_target_band_id", "target_band_id"),
        Index("index_ad_events_on_target_id", "target_id"),
        Index(
            "ad_events_matching_tags_snapshot_index",
            "matching_tags_snapshot",
            postgresql_using="gin",
        ),
        Index(
            "ad_events_null_snapshot_idx",
            "me_file_id",
            "target_band_id",
            postgresql_where=SNAPSHOT_IS_NULL,
        ),
        {"info": OPTIONAL},
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int | None] = extra(Integer)
    me_file_id: Mapped[int | None] = mapped_column(Integer)
    media_run_id: Mapped[int | None] = extra(Integer)
    media_piece_id: Mapped[int | None] = extra(Integer)
    media_piece_phase_id: Mapped[int | None] = extra(Integer)
    target_id: Mapped[int | None] = mapped_column(Integer)
    target_band_id: Mapped[int | None] = mapped_column(Integer)
    offer_id: Mapped[int | None] = mapped_column(Integer)
    offer_bid_amt: Mapped[Decimal | None] = extra(Numeric(8, 2))
    is_payable: Mapped[bool | None] = extra(Boolean)
    is_throttled: Mapped[bool | None] = extra(Boolean)
    is_demo: Mapped[bool | None] = extra(Boolean)
    is_offer_complete: Mapped[bool | None] = extra(Boolean, server_default=_false())
    offer_marketer_cost_amt: Mapped[Decimal | None] = extra(Numeric(8, 2))
    event_marketer_cost_amt: Mapped[Decimal | None] = extra(Numeric(8, 2))
    event_me_file_collect_amt: Mapped[Decimal | None] = extra(Numeric(8, 2))
    referral_credit_id: Mapped[int | None] = extra(Integer)
    recipient_id: Mapped[int | None] = extra(Integer)
    event_recipient_split_pct: Mapped[int | None] = extra(Integer)
    event_recipient_collect_amt: Mapped[Decimal | None] = extra(Numeric(8, 2))
    event_sponster_collect_amt: Mapped[Decimal | None] = extra(Numeric(8, 2))
    event_sponster_to_recipient_amt: Mapped[Decimal | None] = extra(Numeric(8, 2))
    event_split_code: Mapped[str | None] = extra(String(255))
    ip_address: Mapped[str | None] = extra(String(255))
    url: Mapped[str | None] = extra(String(255))
    adget_id_string: Mapped[str | None] = extra(String(255))
    session_id_string: Mapped[str | None] = extra(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    matching_tags_snapshot: Mapped[Any | None] = mapped_column(JSONB(none_as_null=True))
