"""The Qlarius tables qsnap relies on (DOMAIN.md), as SQLAlchemy 2 typed models.

Only these columns are declared: real databases have more and qsnap must not need them.
Foreign keys are deliberately absent, as in production.
"""

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Index, Integer, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Trait(Base):
    __tablename__ = "traits"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    trait_name: Mapped[str] = mapped_column(String(255))
    display_order: Mapped[int | None] = mapped_column(Integer)
    parent_trait_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    is_active: Mapped[str] = mapped_column(String(1), default="1")
    input_type: Mapped[str | None] = mapped_column(String(50))
    added_date: Mapped[datetime] = mapped_column(DateTime)
    modified_date: Mapped[datetime] = mapped_column(DateTime)
    added_by: Mapped[int] = mapped_column(Integer)
    modified_by: Mapped[int] = mapped_column(Integer)


class MeFile(Base):
    __tablename__ = "me_files"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    display_name: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class MeFileTag(Base):
    __tablename__ = "me_file_tags"
    __table_args__ = (Index("me_file_tags_me_file_id_trait_id_index", "me_file_id", "trait_id"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    me_file_id: Mapped[int] = mapped_column(BigInteger)
    trait_id: Mapped[int] = mapped_column(BigInteger, index=True)
    tag_value: Mapped[str | None] = mapped_column(Text)
    added_date: Mapped[datetime] = mapped_column(DateTime)
    modified_date: Mapped[datetime] = mapped_column(DateTime)
    added_by: Mapped[int] = mapped_column(Integer)
    modified_by: Mapped[int] = mapped_column(Integer)


class Target(Base):
    __tablename__ = "targets"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    title: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    marketer_id: Mapped[int | None] = mapped_column(BigInteger)
    population_status: Mapped[str] = mapped_column(String(32), default="not_populated")
    last_populated_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class TargetBand(Base):
    __tablename__ = "target_bands"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    target_id: Mapped[int] = mapped_column(BigInteger, index=True)
    title: Mapped[str | None] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    is_bullseye: Mapped[str] = mapped_column(String(1), default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class TraitGroup(Base):
    __tablename__ = "trait_groups"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    title: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    parent_trait_id: Mapped[int | None] = mapped_column(BigInteger)
    marketer_id: Mapped[int | None] = mapped_column(BigInteger)
    deactivated_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class TraitGroupTrait(Base):
    __tablename__ = "trait_group_traits"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    trait_group_id: Mapped[int] = mapped_column(BigInteger, index=True)
    trait_id: Mapped[int] = mapped_column(BigInteger, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class TargetBandTraitGroup(Base):
    __tablename__ = "target_band_trait_groups"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    target_band_id: Mapped[int] = mapped_column(BigInteger, index=True)
    trait_group_id: Mapped[int] = mapped_column(BigInteger, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


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
        Index("target_populations_me_file_id_index", "me_file_id"),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    target_band_id: Mapped[int] = mapped_column(BigInteger)
    me_file_id: Mapped[int] = mapped_column(BigInteger)
    matching_tags_snapshot: Mapped[Any | None] = mapped_column(JSONB(none_as_null=True))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    table.name: tuple(column.name for column in table.columns)
    for table in Base.metadata.sorted_tables
}
